//! W3C trace context (`traceparent`) in gRPC metadata, so one operation is one
//! trace across services.

use std::task::{Context, Poll};

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(val)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::header::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, val);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes the current span's trace context into outgoing headers (client side).
pub fn inject_current(headers: &mut http::HeaderMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(headers))
    });
}

/// Tower layer for both directions: on a server it continues the caller's
/// trace in a span per request; on a client it injects the current context.
#[derive(Debug, Clone, Copy)]
pub enum TraceContextLayer {
    Server,
    Client,
}

impl<S> tower::Layer<S> for TraceContextLayer {
    type Service = TraceContextService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TraceContextService { inner, mode: *self }
    }
}

#[derive(Debug, Clone)]
pub struct TraceContextService<S> {
    inner: S,
    mode: TraceContextLayer,
}

impl<S, B, RB> tower::Service<http::Request<B>> for TraceContextService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // Take the service that was driven to readiness, leave a clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        match self.mode {
            TraceContextLayer::Client => {
                inject_current(req.headers_mut());
                Box::pin(inner.call(req))
            }
            TraceContextLayer::Server => {
                let parent = opentelemetry::global::get_text_map_propagator(|p| {
                    p.extract(&HeaderExtractor(req.headers()))
                });
                let path = req.uri().path();
                // Named `package.Service/Method` with the OpenTelemetry RPC
                // attributes, so Jaeger lists a trace by the call it serves.
                let full_method = path.strip_prefix('/').unwrap_or(path);
                let (service, method) = full_method.rsplit_once('/').unwrap_or(("", full_method));
                let span = tracing::info_span!(
                    "grpc",
                    otel.name = %full_method,
                    otel.kind = "server",
                    otel.status_code = tracing::field::Empty,
                    otel.status_message = tracing::field::Empty,
                    rpc.grpc.status_code = tracing::field::Empty,
                );
                // A request without a valid traceparent simply starts a trace.
                let _ = span.set_parent(parent);
                // Exported only, not fields: log lines already name the call.
                span.set_attribute("rpc.system", "grpc");
                span.set_attribute("rpc.service", service.to_string());
                span.set_attribute("rpc.method", method.to_string());
                let recorder = span.clone();
                Box::pin(
                    async move {
                        let resp = inner.call(req).await?;
                        record_grpc_status(&recorder, resp.headers());
                        Ok(resp)
                    }
                    .instrument(span),
                )
            }
        }
    }
}

/// Marks a failed call on its span, so Jaeger shows it as an error with the
/// gRPC code and message. A call that fails answers with `grpc-status` in
/// its headers (trailers-only); a successful one carries it in trailers,
/// which arrive after the span ends: no header means OK.
fn record_grpc_status(span: &tracing::Span, headers: &http::HeaderMap) {
    let Some(code) = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
    else {
        return;
    };
    span.record("rpc.grpc.status_code", code);
    if code != 0 {
        span.record("otel.status_code", "ERROR");
        if let Some(msg) = headers.get("grpc-message").and_then(|v| v.to_str().ok()) {
            // Percent-encoded on the wire; readable enough for a trace view.
            span.record("otel.status_message", msg);
        }
    }
}

/// A W3C trace context decided once for a whole process, for a client that
/// records no spans of its own: every request of one CLI command carries the
/// same `traceparent`, so the spans the services record for that command form
/// one trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    span_context: SpanContext,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "not a W3C traceparent (expected 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>): {0:?}"
)]
pub struct TraceParentError(String);

impl TraceParent {
    /// A new trace: random trace and span ids, sampled (the caller asked
    /// for a trace, so the services' parent-based samplers must keep it).
    pub fn new_root() -> Self {
        let ids = RandomIdGenerator::default();
        TraceParent {
            span_context: SpanContext::new(
                ids.new_trace_id(),
                ids.new_span_id(),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            ),
        }
    }

    /// Joins an existing trace, e.g. `TRACEPARENT` set by a CI pipeline.
    /// Only the sampled flag is kept, as given: an unsampled parent stays
    /// unsampled. Strict about lengths (the SDK's propagator is not), so an
    /// id is never silently padded into another trace.
    pub fn parse(traceparent: &str) -> Result<Self, TraceParentError> {
        let value = traceparent.trim();
        let bad = || TraceParentError(traceparent.to_string());
        let is_hex = |part: &str, len: usize| {
            part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let mut parts = value.split('-');
        let (Some(version), Some(trace), Some(span), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        // Later versions may append fields; version 00 has exactly four.
        let extra = parts.next().is_some();
        if !is_hex(version, 2)
            || version == "ff"
            || (version == "00" && extra)
            || !is_hex(trace, 32)
            || !is_hex(span, 16)
            || !is_hex(flags, 2)
        {
            return Err(bad());
        }
        let trace_id = TraceId::from_hex(trace).map_err(|_| bad())?;
        let span_id = SpanId::from_hex(span).map_err(|_| bad())?;
        let flags = u8::from_str_radix(flags, 16).map_err(|_| bad())?;
        let span_context = SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::new(flags) & TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        if !span_context.is_valid() {
            return Err(bad());
        }
        Ok(TraceParent { span_context })
    }

    /// 32 lowercase hex digits, as Jaeger's search takes it.
    pub fn trace_id(&self) -> String {
        self.span_context.trace_id().to_string()
    }

    /// The parent span id the services' spans will point to.
    pub fn span_id(&self) -> String {
        self.span_context.span_id().to_string()
    }

    /// The `traceparent` header value.
    pub fn header_value(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id(),
            self.span_id(),
            self.span_context.trace_flags().to_u8()
        )
    }

    /// A client layer sending this context with every request.
    pub fn layer(&self) -> TraceParentLayer {
        TraceParentLayer {
            header: http::HeaderValue::from_str(&self.header_value()).ok(),
        }
    }
}

/// Tower client layer that sends one fixed `traceparent` with every request
/// (see [`TraceParent`]); the default layer sends nothing.
#[derive(Debug, Clone, Default)]
pub struct TraceParentLayer {
    header: Option<http::HeaderValue>,
}

impl<S> tower::Layer<S> for TraceParentLayer {
    type Service = TraceParentService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TraceParentService {
            inner,
            header: self.header.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TraceParentService<S> {
    inner: S,
    header: Option<http::HeaderValue>,
}

impl<S, B> tower::Service<http::Request<B>> for TraceParentService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Some(h) = &self.header {
            req.headers_mut().insert(
                http::header::HeaderName::from_static("traceparent"),
                h.clone(),
            );
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn context_survives_inject_and_extract() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("outer");
            let _g = span.enter();
            let sent = span.context().span().span_context().trace_id();
            let mut headers = http::HeaderMap::new();
            inject_current(&mut headers);
            assert!(
                headers.contains_key("traceparent"),
                "traceparent header missing"
            );
            let got = opentelemetry::global::get_text_map_propagator(|p| {
                p.extract(&HeaderExtractor(&headers))
            });
            assert_eq!(got.span().span_context().trace_id(), sent);
        });
    }

    #[test]
    fn a_new_root_is_sampled_and_round_trips() {
        let root = TraceParent::new_root();
        let header = root.header_value();
        assert_eq!(header.len(), 55, "{header}");
        assert!(header.ends_with("-01"), "sampled flag missing: {header}");
        assert_eq!(root.trace_id().len(), 32);
        assert_ne!(root.trace_id(), "0".repeat(32));
        assert_eq!(
            TraceParent::parse(&header).expect("own header parses"),
            root
        );
        assert_ne!(TraceParent::new_root().trace_id(), root.trace_id());
    }

    #[test]
    fn parse_keeps_ids_and_flags_and_refuses_garbage() {
        let tp = TraceParent::parse(" 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00\n")
            .expect("valid traceparent");
        assert_eq!(tp.trace_id(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(tp.span_id(), "b7ad6b7169203331");
        assert_eq!(
            tp.header_value(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
        );
        // A later version with more fields: the four known ones are used.
        let v1 = TraceParent::parse("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03-x")
            .expect("later version");
        assert_eq!(
            v1.header_value(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
        ] {
            assert!(TraceParent::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn the_layer_sets_traceparent_on_every_request_and_the_default_none() {
        use tower::{Layer, Service, ServiceExt};
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = |seen: std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>| {
            tower::service_fn(move |req: http::Request<()>| {
                let v = req
                    .headers()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                seen.lock().expect("not poisoned").push(v);
                std::future::ready(Ok::<_, std::convert::Infallible>(()))
            })
        };
        let tp = TraceParent::new_root();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut traced = tp.layer().layer(record(seen.clone()));
            for _ in 0..2 {
                traced
                    .ready()
                    .await
                    .expect("ready")
                    .call(http::Request::new(()))
                    .await
                    .expect("call");
            }
            let mut plain = TraceParentLayer::default().layer(record(seen.clone()));
            plain
                .ready()
                .await
                .expect("ready")
                .call(http::Request::new(()))
                .await
                .expect("call");
        });
        let h = Some(tp.header_value());
        assert_eq!(
            *seen.lock().expect("not poisoned"),
            vec![h.clone(), h, None]
        );
    }
}
