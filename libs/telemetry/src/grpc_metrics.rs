//! Prometheus metrics of a gRPC server, as a tower layer: calls handled by
//! method and gRPC code, their latency, and the calls in flight.
//!
//! A call ends when its response body ends: a unary call's status travels
//! in the trailers after its message, a stream's after its last message, a
//! refused call's in the response headers (trailers-only). A call whose
//! response is dropped before a status was seen (the client went away, or
//! its own deadline passed) counts as `CANCELLED`.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use hyper::body::{Body, Frame, SizeHint};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Latency buckets in seconds: from a cached read to a Verify of a whole
/// topic.
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// Label of methods the server does not serve, so that a client sending
/// arbitrary paths cannot create arbitrary series.
const UNKNOWN: &str = "unknown";

/// The metrics, registered once per process (`<prefix>_grpc_server_*`).
#[derive(Clone, Debug)]
pub struct GrpcServerMetrics {
    handled: IntCounterVec,
    handling: HistogramVec,
    in_flight: IntGaugeVec,
}

impl GrpcServerMetrics {
    /// Registers `grpc_server_handled_total` and
    /// `grpc_server_handling_seconds` (labels `grpc_service`,
    /// `grpc_method`, `grpc_code`) and `grpc_server_in_flight`
    /// (`grpc_service`, `grpc_method`) in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let handled = IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "gRPC calls completed, by method and gRPC status code",
            ),
            &["grpc_service", "grpc_method", "grpc_code"],
        )?;
        let handling = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Time from a gRPC call's arrival to its status, by method and gRPC status code",
            )
            .buckets(BUCKETS.to_vec()),
            &["grpc_service", "grpc_method", "grpc_code"],
        )?;
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "grpc_server_in_flight",
                "gRPC calls started and not completed yet, by method",
            ),
            &["grpc_service", "grpc_method"],
        )?;
        registry.register(Box::new(handled.clone()))?;
        registry.register(Box::new(handling.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(GrpcServerMetrics {
            handled,
            handling,
            in_flight,
        })
    }

    /// A server layer measuring calls of the `methods` given as
    /// `package.Service/Method`; any other path is labelled `unknown`.
    pub fn layer<I, M>(&self, methods: I) -> GrpcMetricsLayer
    where
        I: IntoIterator<Item = M>,
        M: Into<String>,
    {
        GrpcMetricsLayer {
            metrics: self.clone(),
            methods: Arc::new(methods.into_iter().map(Into::into).collect()),
        }
    }
}

/// See [`GrpcServerMetrics::layer`].
#[derive(Clone, Debug)]
pub struct GrpcMetricsLayer {
    metrics: GrpcServerMetrics,
    methods: Arc<HashSet<String>>,
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct GrpcMetricsService<S> {
    inner: S,
    layer: GrpcMetricsLayer,
}

/// One call being measured; counted exactly once, at the latest when dropped.
struct Call {
    metrics: GrpcServerMetrics,
    service: String,
    method: String,
    started: Instant,
    done: bool,
}

impl Call {
    fn start(layer: &GrpcMetricsLayer, path: &str) -> Call {
        let full = path.strip_prefix('/').unwrap_or(path);
        let (service, method) = match full.rsplit_once('/') {
            Some((s, m)) if layer.methods.contains(full) => (s.to_string(), m.to_string()),
            _ => (UNKNOWN.to_string(), UNKNOWN.to_string()),
        };
        layer
            .metrics
            .in_flight
            .with_label_values(&[&service, &method])
            .inc();
        Call {
            metrics: layer.metrics.clone(),
            service,
            method,
            started: Instant::now(),
            done: false,
        }
    }

    fn finish(&mut self, code: &str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let labels = [self.service.as_str(), self.method.as_str(), code];
        self.metrics.handled.with_label_values(&labels).inc();
        self.metrics
            .handling
            .with_label_values(&labels)
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics
            .in_flight
            .with_label_values(&[&self.service, &self.method])
            .dec();
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish("CANCELLED");
    }
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<MeteredBody<RB>>;
    type Error = S::Error;
    type Future = Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send + 'static>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // Take the service that was driven to readiness, leave a clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let mut call = Call::start(&self.layer, req.uri().path());
        Box::pin(async move {
            let resp = match inner.call(req).await {
                Ok(resp) => resp,
                Err(e) => {
                    // The server turns a service error into a status we do
                    // not see; tonic's own services do not fail this way.
                    call.finish(UNKNOWN_CODE);
                    return Err(e);
                }
            };
            // Trailers-only: a refused or failed call has its status here.
            if let Some(code) = grpc_code(resp.headers()) {
                call.finish(code);
            }
            Ok(resp.map(|inner| MeteredBody {
                inner,
                call: Some(call),
            }))
        })
    }
}

const UNKNOWN_CODE: &str = "UNKNOWN";

/// A response body that completes its call's measure when the status
/// arrives in the trailers, or when it is dropped.
pub struct MeteredBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> MeteredBody<B> {
    fn finish(&mut self, code: &str) {
        if let Some(mut call) = self.call.take() {
            call.finish(code);
        }
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_code) {
                    this.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish("INTERNAL"),
            // A gRPC response always ends with a status; without one the
            // client sees the call fail.
            Poll::Ready(None) => this.finish(UNKNOWN_CODE),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The `grpc-status` of a header or trailer map, as its canonical name.
fn grpc_code(headers: &http::HeaderMap) -> Option<&'static str> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<u16>()
        .ok()?;
    Some(code_name(code))
}

/// The gRPC status code names of the gRPC specification.
pub fn code_name(code: u16) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => UNKNOWN_CODE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};
    use tower::{Layer, Service, ServiceExt};

    type TestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

    fn status_headers(code: u16) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(
            "grpc-status",
            http::HeaderValue::from_str(&code.to_string()).expect("header"),
        );
        h
    }

    /// A message, then the status in trailers, as a unary call answers.
    fn unary(code: u16) -> TestBody {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
            Ok(Frame::trailers(status_headers(code))),
        ];
        StreamBody::new(futures::stream::iter(frames)).boxed_unsync()
    }

    fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{{labels}}} ")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    fn text(registry: &Registry) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .expect("encode");
        String::from_utf8(buf).expect("utf-8")
    }

    #[tokio::test]
    async fn calls_are_counted_by_method_and_code_when_their_status_arrives() {
        let registry = Registry::new_custom(Some("test".into()), None).expect("registry");
        let metrics = GrpcServerMetrics::register(&registry).expect("register");
        let inner = tower::service_fn(|req: http::Request<()>| async move {
            let resp = match req.uri().path() {
                "/p.S/Ok" => http::Response::new(unary(0)),
                "/p.S/Stream" => http::Response::new(unary(14)),
                _ => {
                    // Trailers-only, as tonic answers a failed call.
                    let mut r = http::Response::new(Full::new(Bytes::new()).boxed_unsync());
                    *r.headers_mut() = status_headers(5);
                    r
                }
            };
            Ok::<_, std::convert::Infallible>(resp)
        });
        let mut svc = metrics
            .layer(["p.S/Ok", "p.S/Missing", "p.S/Stream"])
            .layer(inner);
        let call = |path: &'static str| http::Request::builder().uri(path).body(()).expect("req");

        let ok = svc
            .ready()
            .await
            .expect("ready")
            .call(call("/p.S/Ok"))
            .await;
        let ok = ok.expect("response");
        // Not finished before its trailers went out.
        let before = text(&registry);
        assert_eq!(
            sample(
                &before,
                "test_grpc_server_in_flight",
                r#"grpc_method="Ok",grpc_service="p.S""#
            ),
            Some(1.0),
            "{before}"
        );
        ok.into_body().collect().await.expect("body");

        for path in ["/p.S/Missing", "/p.S/Missing", "/other.X/Y"] {
            let r = svc.ready().await.expect("ready").call(call(path)).await;
            r.expect("response")
                .into_body()
                .collect()
                .await
                .expect("body");
        }
        // A response dropped before its end: the client went away.
        let cut = svc
            .ready()
            .await
            .expect("ready")
            .call(call("/p.S/Stream"))
            .await;
        drop(cut.expect("response"));

        let t = text(&registry);
        let handled = "test_grpc_server_handled_total";
        for (labels, n) in [
            (r#"grpc_code="OK",grpc_method="Ok",grpc_service="p.S""#, 1.0),
            (
                r#"grpc_code="NOT_FOUND",grpc_method="Missing",grpc_service="p.S""#,
                2.0,
            ),
            (
                r#"grpc_code="NOT_FOUND",grpc_method="unknown",grpc_service="unknown""#,
                1.0,
            ),
            (
                r#"grpc_code="CANCELLED",grpc_method="Stream",grpc_service="p.S""#,
                1.0,
            ),
        ] {
            assert_eq!(sample(&t, handled, labels), Some(n), "{labels}\n{t}");
        }
        assert_eq!(
            sample(
                &t,
                "test_grpc_server_handling_seconds_count",
                r#"grpc_code="NOT_FOUND",grpc_method="Missing",grpc_service="p.S""#
            ),
            Some(2.0),
            "{t}"
        );
        assert!(
            !t.lines()
                .any(|l| l.starts_with("test_grpc_server_in_flight{") && !l.ends_with(" 0")),
            "calls still in flight:\n{t}"
        );
    }
}
