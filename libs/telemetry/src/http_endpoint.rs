//! `GET /metrics` (Prometheus text format) and `GET /healthz` on one port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::TelemetryError;

/// Readiness flag: false until the service can do its work, and again while
/// it shuts down, so load balancers stop sending to it.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<AtomicBool>);

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Binds `addr` and serves until `cancel` fires. Returns the bound address
/// (useful with port 0) and the task's handle.
pub async fn serve_http(
    addr: &str,
    registry: prometheus::Registry,
    health: Health,
    cancel: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), TelemetryError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| TelemetryError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let local = listener
        .local_addr()
        .map_err(|source| TelemetryError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let handle = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let (stream, _) = tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "http accept failed");
                        continue;
                    }
                },
            };
            let registry = registry.clone();
            let health = health.clone();
            let cancel = cancel.clone();
            conns.spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let registry = registry.clone();
                    let health = health.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(respond(
                            req.uri().path(),
                            &registry,
                            &health,
                        ))
                    }
                });
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = cancel.cancelled() => {}
                }
            });
            // Reap finished connections so the set stays small.
            while conns.try_join_next().is_some() {}
        }
        conns.shutdown().await;
    });
    Ok((local, handle))
}

fn respond(
    path: &str,
    registry: &prometheus::Registry,
    health: &Health,
) -> hyper::Response<Full<Bytes>> {
    let (status, body, ctype) = match path {
        "/metrics" => {
            let mut buf = Vec::new();
            match TextEncoder::new().encode(&registry.gather(), &mut buf) {
                Ok(()) => (200, buf, "text/plain; version=0.0.4"),
                Err(e) => (500, e.to_string().into_bytes(), "text/plain"),
            }
        }
        "/healthz" if health.is_ready() => (200, b"ok\n".to_vec(), "text/plain"),
        "/healthz" => (503, b"not ready\n".to_vec(), "text/plain"),
        _ => (404, b"try /metrics or /healthz\n".to_vec(), "text/plain"),
    };
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = http::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}
