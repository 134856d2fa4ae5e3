//! W3C trace context (`traceparent`) in gRPC metadata, so one operation is one
//! trace across services.

use std::task::{Context, Poll};

use opentelemetry::propagation::{Extractor, Injector};
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

impl<S, B> tower::Service<http::Request<B>> for TraceContextService<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
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
                let span = tracing::info_span!("grpc", path = %req.uri().path());
                // A request without a valid traceparent simply starts a trace.
                let _ = span.set_parent(parent);
                Box::pin(async move { inner.call(req).await }.instrument(span))
            }
        }
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
}
