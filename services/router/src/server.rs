//! The Kafka listener: one task per client connection, requests handled
//! concurrently (bounded) and answered in order, as Kafka requires.
//!
//! Generic over the byte stream, so TLS (a `tokio_rustls` stream) and SASL
//! (a handshake before the loop) wrap it without changing the loop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cutover_kafka::codec::{take_frame, FrameLengthError};
use futures::stream::{FuturesOrdered, StreamExt};
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::encoded::Encoded;
use crate::frame::{self, FrameError};
use crate::router::Router;

/// Limits of one client connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_request_bytes: usize,
    pub max_inflight: usize,
    pub max_inflight_bytes: usize,
}

/// Accepts clients until `stop` fires; then every connection stops
/// reading, answers what it has read (within `drain`), and closes.
pub async fn serve(
    listener: TcpListener,
    router: Arc<Router>,
    limits: ConnectionLimits,
    stop: CancellationToken,
    drain: Duration,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let span = tracing::info_span!("client", %peer);
                    connections.spawn(
                        serve_connection(stream, peer.ip().to_string(), router.clone(), limits, stop.clone()).instrument(span),
                    );
                }
                Err(e) => {
                    // Out of file descriptors and the like: keep serving
                    // the connections there are.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let waited = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if waited.is_err() {
        warn!(
            left = connections.len(),
            "connections still busy after the drain time; closing them"
        );
        connections.shutdown().await;
    }
}

type Answer = Pin<Box<dyn Future<Output = (usize, Result<Option<Encoded>, FrameError>)> + Send>>;

/// One client connection until it closes, breaks a rule, or `stop` fires.
pub async fn serve_connection<S>(
    stream: S,
    client_host: String,
    router: Arc<Router>,
    limits: ConnectionLimits,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let metrics = router.metrics.clone();
    metrics.connections.inc();
    // Balanced on every way out of this function.
    struct Open(prometheus::IntGauge);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    let _open = Open(metrics.connections.clone());
    let closed = |reason: &str| metrics.closed.with_label_values(&[reason]).inc();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // This client's own upstream connections (see `cutover_kafka::Lane`),
    // closed with it.
    let lanes = Arc::new(router.lanes(client_host));
    let mut turns = crate::turn::Turns::default();
    let mut answers: FuturesOrdered<Answer> = FuturesOrdered::new();
    let mut held_bytes = 0usize;
    let mut reading = true;
    loop {
        let room = answers.is_empty()
            || (answers.len() < limits.max_inflight && held_bytes < limits.max_inflight_bytes);
        tokio::select! {
            _ = stop.cancelled(), if reading => {
                // Answer what was read; take nothing new.
                reading = false;
            }
            Some((size, answer)) = answers.next(), if !answers.is_empty() => {
                held_bytes -= size;
                match answer {
                    Ok(Some(frame)) => {
                        for piece in frame.pieces() {
                            if let Err(e) = wr.write_all(piece).await {
                                debug!(error = %e, "client went away");
                                return;
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        closed(e.reason());
                        warn!(error = %e, "closing the connection");
                        return;
                    }
                }
            }
            read = read_frame(&mut rd, &mut buf, limits.max_request_bytes), if reading && room => match read {
                Ok(Some(frame)) => {
                    let size = frame.len();
                    match frame::parse(frame) {
                        Ok((header, request)) => {
                            held_bytes += size;
                            let router = router.clone();
                            let lanes = lanes.clone();
                            let turn = turns.take();
                            let span = tracing::debug_span!(
                                "request",
                                api = ?header.api,
                                version = header.version,
                                correlation_id = header.correlation_id,
                                client = %header.client(),
                            );
                            answers.push_back(Box::pin(
                                async move {
                                    let api = crate::metrics::api_name(header.api);
                                    let m = &router.metrics;
                                    let started = std::time::Instant::now();
                                    let answer = router.handle(&header, request, &lanes, turn).await;
                                    m.latency
                                        .with_label_values(&[api])
                                        .observe(started.elapsed().as_secs_f64());
                                    m.requests.with_label_values(&[api]).inc();
                                    m.bytes_in.with_label_values(&[api]).inc_by(size as u64 + 4);
                                    if let Ok(Some(frame)) = &answer {
                                        m.bytes_out.with_label_values(&[api]).inc_by(frame.len() as u64);
                                    }
                                    (size, answer)
                                }
                                .instrument(span),
                            ));
                        }
                        Err(FrameError::UnsupportedApiVersions { version, correlation_id, client }) => {
                            info!(version, client = %client, "ApiVersions newer than the router's; answering UNSUPPORTED_VERSION");
                            let mut resp: ApiVersionsResponse = router.api_versions();
                            resp.error_code = cutover_kafka::codes::UNSUPPORTED_VERSION;
                            let frame = frame::encode_response_at(ApiKey::ApiVersions, 0, correlation_id, &resp);
                            answers.push_back(Box::pin(async move { (0, frame.map(|f| Some(f.into()))) }));
                        }
                        Err(e) => {
                            // Answer what came before it, then close.
                            warn!(error = %e, "refusing the request; the connection closes after earlier answers");
                            reading = false;
                            answers.push_back(Box::pin(async move { (0, Err(e)) }));
                        }
                    }
                }
                Ok(None) => reading = false,
                Err(e) => {
                    closed(e.reason());
                    warn!(error = %e, "closing the connection");
                    reading = false;
                }
            },
        }
        if !reading && answers.is_empty() {
            let _ = wr.shutdown().await;
            return;
        }
    }
}

/// Errors that end a connection while reading.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0} (--max-request-bytes)")]
    Length(#[from] FrameLengthError),
    #[error("the client closed the connection in the middle of a request")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl ReadError {
    /// The `reason` label of a connection closed for it.
    pub fn reason(&self) -> &'static str {
        match self {
            ReadError::Length(FrameLengthError::TooLarge { .. }) => "too_large",
            ReadError::Length(FrameLengthError::Negative(_)) => "negative",
            ReadError::Length(FrameLengthError::TooShort { .. }) => "malformed",
            ReadError::Truncated => "truncated",
            ReadError::Io(_) => "io",
        }
    }
}

/// The next frame (without its length prefix); `None` at a clean end of
/// stream. Memory: at most one frame of at most `max` bytes.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Bytes>, ReadError> {
    loop {
        if let Some(frame) = take_frame(buf, max)? {
            return Ok(Some(frame));
        }
        if rd.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ReadError::Truncated)
            };
        }
    }
}
