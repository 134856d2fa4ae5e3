//! The public gRPC server: the API behind its tower layers.
//!
//! Outermost first: trace context, metrics, admission (concurrency limits),
//! deadline (per-call timeout), then the API. Limits and timeouts depend on
//! the method ([`Kind`]): Verify reads whole partitions, so it has a limit
//! of its own and a longer timeout; WatchStatus is a stream that lasts as
//! long as its client wants, so it has no timeout (it still holds a slot of
//! the overall limit while open). Calls beyond a limit are refused at once
//! with RESOURCE_EXHAUSTED rather than queued: a queue in front of a busy
//! server only hides the overload, and the caller knows best whether to wait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use cutover_proto::v1::orchestrator_server::OrchestratorServer;
use cutover_telemetry::{GrpcServerMetrics, TraceContextLayer};
use futures::Stream;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::server::NamedService;

use crate::api::Api;
use crate::error::RETRIABLE_METADATA;
use crate::{Orchestrator, OrchestratorConfig};

/// `package.Service` of the public API.
pub const SERVICE: &str = <OrchestratorServer<Api> as NamedService>::NAME;

/// How a method is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Answers within `--request-timeout-ms`.
    Unary,
    /// Reads whole partitions: `--verify-timeout-secs`, and at most
    /// `--max-concurrent-verifies` at once.
    Verify,
    /// A stream that lasts until the client goes away: no timeout.
    Stream,
    /// A promotion or rollback: runs to its end (members rejoining for up
    /// to 240 s, `--verify` reading whole partitions), so it has
    /// `--verify-timeout-secs` rather than the unary timeout.
    Promotion,
}

/// Every method of the public API (a test checks this list against the
/// proto, so a new method cannot go unmeasured or unlimited).
pub const METHODS: &[(&str, Kind)] = &[
    ("CreateLink", Kind::Unary),
    ("GetLink", Kind::Unary),
    ("ListLinks", Kind::Unary),
    ("DeleteLink", Kind::Unary),
    ("AddMirrors", Kind::Unary),
    ("ListMirrors", Kind::Unary),
    ("PauseMirrors", Kind::Unary),
    ("ResumeMirrors", Kind::Unary),
    ("RemoveMirrors", Kind::Unary),
    ("GetStatus", Kind::Unary),
    ("WatchStatus", Kind::Stream),
    ("Verify", Kind::Verify),
    ("Promote", Kind::Promotion),
    ("Rollback", Kind::Promotion),
    ("ListPromotions", Kind::Unary),
    ("Detach", Kind::Unary),
    ("AddGroups", Kind::Unary),
    ("ListGroups", Kind::Unary),
    ("RemoveGroups", Kind::Unary),
    ("SyncGroupOffsets", Kind::Unary),
];

/// The kind of the method a request path (`/package.Service/Method`) names;
/// unknown paths are unary (the API answers them UNIMPLEMENTED at once).
fn kind_of(path: &str) -> Kind {
    path.strip_prefix('/')
        .and_then(|p| p.strip_prefix(SERVICE))
        .and_then(|p| p.strip_prefix('/'))
        .and_then(|m| METHODS.iter().find(|(name, _)| *name == m))
        .map_or(Kind::Unary, |(_, kind)| *kind)
}

fn method_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The limits of the server, from the flags.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Unary calls; `None`: no timeout.
    pub request_timeout: Option<Duration>,
    /// Verify; `None`: no timeout.
    pub verify_timeout: Option<Duration>,
    pub max_concurrent_requests: usize,
    pub max_concurrent_verifies: usize,
}

impl Limits {
    pub fn from_config(cfg: &OrchestratorConfig) -> Limits {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        Limits {
            request_timeout: nonzero(Duration::from_millis(cfg.request_timeout_ms)),
            verify_timeout: nonzero(Duration::from_secs(cfg.verify_timeout_secs)),
            max_concurrent_requests: cfg.max_concurrent_requests.max(1),
            max_concurrent_verifies: cfg.max_concurrent_verifies.max(1),
        }
    }

    fn timeout(&self, kind: Kind) -> Option<Duration> {
        match kind {
            Kind::Unary => self.request_timeout,
            Kind::Verify | Kind::Promotion => self.verify_timeout,
            Kind::Stream => None,
        }
    }
}

type Response = http::Response<tonic::body::Body>;
type BoxFuture<E> = Pin<Box<dyn Future<Output = Result<Response, E>> + Send + 'static>>;

/// Refuses calls beyond the concurrency limits with RESOURCE_EXHAUSTED.
/// A call holds its slots until its response body ends, so an open
/// WatchStatus stream counts.
#[derive(Debug, Clone)]
pub struct AdmissionLayer {
    all: Arc<Semaphore>,
    verify: Arc<Semaphore>,
    limits: Arc<Limits>,
}

impl AdmissionLayer {
    pub fn new(limits: Arc<Limits>) -> Self {
        AdmissionLayer {
            all: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            verify: Arc::new(Semaphore::new(limits.max_concurrent_verifies)),
            limits,
        }
    }

    /// The slots for a call of `kind`, or the refusal to answer.
    fn admit(&self, kind: Kind) -> Result<Vec<OwnedSemaphorePermit>, tonic::Status> {
        let mut held = Vec::with_capacity(2);
        if kind == Kind::Verify {
            held.push(self.verify.clone().try_acquire_owned().map_err(|_| {
                busy(format!(
                    "{n} Verify calls are running, the most this orchestrator runs at once \
                     (--max-concurrent-verifies {n}); retry later, when one has finished",
                    n = self.limits.max_concurrent_verifies
                ))
            })?);
        }
        held.push(self.all.clone().try_acquire_owned().map_err(|_| {
            busy(format!(
                "the orchestrator is serving {n} calls, its limit (--max-concurrent-requests {n}); \
                 retry later",
                n = self.limits.max_concurrent_requests
            ))
        })?);
        Ok(held)
    }
}

/// RESOURCE_EXHAUSTED, marked as worth retrying.
fn busy(message: String) -> tonic::Status {
    let mut status = tonic::Status::resource_exhausted(message);
    status.metadata_mut().insert(
        RETRIABLE_METADATA,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    status
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdmissionService<S> {
    inner: S,
    layer: AdmissionLayer,
}

impl<S, B> tower::Service<http::Request<B>> for AdmissionService<S>
where
    S: tower::Service<http::Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let held = match self.layer.admit(kind_of(req.uri().path())) {
            Ok(held) => held,
            Err(refused) => return Box::pin(std::future::ready(Ok(refused.into_http()))),
        };
        // Take the service that was driven to readiness, leave a clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let resp = inner.call(req).await?;
            // The body carries the slots: they are free once it has been
            // sent or dropped (a stream's work goes on after its headers).
            Ok(resp.map(|body| {
                tonic::body::Body::new(body.map_frame(move |frame| {
                    let _slots = &held;
                    frame
                }))
            }))
        })
    }
}

/// Ends a call that outlives its method's timeout with DEADLINE_EXCEEDED
/// (its work is dropped, as when the client goes away).
#[derive(Debug, Clone)]
pub struct DeadlineLayer {
    limits: Arc<Limits>,
}

impl DeadlineLayer {
    pub fn new(limits: Arc<Limits>) -> Self {
        DeadlineLayer { limits }
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            limits: self.limits.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    limits: Arc<Limits>,
}

impl<S, B> tower::Service<http::Request<B>> for DeadlineService<S>
where
    S: tower::Service<http::Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let kind = kind_of(path);
        let timeout = self.limits.timeout(kind);
        let method = method_of(path).to_string();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let call = inner.call(req);
        let Some(timeout) = timeout else {
            return Box::pin(call);
        };
        Box::pin(async move {
            match tokio::time::timeout(timeout, call).await {
                Ok(answered) => answered,
                Err(_) => {
                    let (flag, hint) = match kind {
                        Kind::Verify => (
                            "--verify-timeout-secs",
                            "verify fewer partitions or a range of offsets at a time, or raise the limit",
                        ),
                        Kind::Promotion => (
                            "--verify-timeout-secs",
                            "the promotion goes on to its end (see `cutover promotions`)",
                        ),
                        _ => (
                            "--request-timeout-ms",
                            "a cluster or etcd may be slow to answer; retry, or raise the limit",
                        ),
                    };
                    Ok(tonic::Status::deadline_exceeded(format!(
                        "{method} did not finish within {timeout:?} ({flag}) and was stopped; {hint}"
                    ))
                    .into_http())
                }
            }
        })
    }
}

/// Serves the API on `incoming` until `shutdown` resolves, measured in
/// `metrics` and limited as `cfg` says.
pub async fn serve<I, IO, IE, F>(
    orch: Arc<Orchestrator>,
    metrics: &GrpcServerMetrics,
    incoming: I,
    shutdown: F,
) -> Result<(), tonic::transport::Error>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: Future<Output = ()>,
{
    let limits = Arc::new(Limits::from_config(&orch.cfg));
    tonic::transport::Server::builder()
        // Continue the caller's trace (CLI or another service) in this
        // service; outermost, so refused calls are traced too.
        .layer(TraceContextLayer::Server)
        // Count every call and its latency by method and code, refused and
        // timed-out ones included.
        .layer(metrics.layer(METHODS.iter().map(|(m, _)| format!("{SERVICE}/{m}"))))
        // Bound the work served at once; refuse, never queue, beyond it.
        .layer(AdmissionLayer::new(limits.clone()))
        // Bound how long one call may take.
        .layer(DeadlineLayer::new(limits))
        .add_service(OrchestratorServer::new(Api(orch)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;
    use tower::{Layer, ServiceExt};

    fn limits(max_all: usize, max_verify: usize) -> Arc<Limits> {
        Arc::new(Limits {
            request_timeout: Some(Duration::from_secs(1)),
            verify_timeout: Some(Duration::from_secs(60)),
            max_concurrent_requests: max_all,
            max_concurrent_verifies: max_verify,
        })
    }

    fn request(method: &str) -> http::Request<()> {
        http::Request::builder()
            .uri(format!("/{SERVICE}/{method}"))
            .body(())
            .expect("request")
    }

    fn code(resp: &Response) -> Option<tonic::Code> {
        tonic::Status::from_header_map(resp.headers()).map(|s| s.code())
    }

    fn message(resp: &Response) -> String {
        tonic::Status::from_header_map(resp.headers())
            .map(|s| s.message().to_string())
            .unwrap_or_default()
    }

    /// An API that never answers, like one waiting on a silent cluster.
    fn never(_: http::Request<()>) -> std::future::Pending<Result<Response, Infallible>> {
        std::future::pending()
    }

    /// An API that answers at once, with a message body still to be sent.
    fn answering(_: http::Request<()>) -> std::future::Ready<Result<Response, Infallible>> {
        let body = tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::from_static(
            b"\0\0\0\0\0",
        )));
        std::future::ready(Ok(http::Response::new(body)))
    }

    async fn call<S>(svc: &mut S, method: &str) -> Response
    where
        S: tower::Service<http::Request<()>, Response = Response, Error = Infallible>,
    {
        match svc.ready().await {
            Ok(ready) => match ready.call(request(method)).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            },
            Err(never) => match never {},
        }
    }

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        config: OrchestratorConfig,
    }

    fn flags(args: &[&str]) -> OrchestratorConfig {
        let mut all = vec!["cutover-orchestrator"];
        all.extend_from_slice(args);
        <Flags as clap::Parser>::parse_from(all).config
    }

    #[test]
    fn every_method_of_the_proto_has_a_kind() {
        let proto = include_str!("../../../proto/cutover/v1/orchestrator.proto");
        let mut in_proto: Vec<&str> = proto
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .filter_map(|l| l.split('(').next())
            .map(str::trim)
            .collect();
        let mut listed: Vec<&str> = METHODS.iter().map(|(m, _)| *m).collect();
        in_proto.sort();
        listed.sort();
        assert_eq!(in_proto, listed);
        assert_eq!(SERVICE, "cutover.v1.Orchestrator");
        assert_eq!(kind_of("/cutover.v1.Orchestrator/Verify"), Kind::Verify);
        assert_eq!(
            kind_of("/cutover.v1.Orchestrator/WatchStatus"),
            Kind::Stream
        );
        assert_eq!(kind_of("/cutover.v1.Orchestrator/GetStatus"), Kind::Unary);
        assert_eq!(kind_of("/other.Service/Verify"), Kind::Unary);
    }

    #[test]
    fn zero_means_no_timeout_and_limits_are_at_least_one() {
        let l = Limits::from_config(&flags(&[
            "--request-timeout-ms",
            "0",
            "--verify-timeout-secs",
            "0",
            "--max-concurrent-requests",
            "0",
        ]));
        assert_eq!((l.request_timeout, l.verify_timeout), (None, None));
        assert_eq!(l.max_concurrent_requests, 1);
        let defaults = Limits::from_config(&flags(&[]));
        assert_eq!(defaults.request_timeout, Some(Duration::from_secs(60)));
        assert_eq!(defaults.verify_timeout, Some(Duration::from_secs(3600)));
        assert_eq!(
            (
                defaults.max_concurrent_requests,
                defaults.max_concurrent_verifies
            ),
            (64, 2)
        );
        assert_eq!(defaults.timeout(Kind::Stream), None);
        assert_eq!(
            defaults.timeout(Kind::Promotion),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(kind_of("/cutover.v1.Orchestrator/Promote"), Kind::Promotion);
    }

    #[tokio::test(start_paused = true)]
    async fn a_unary_call_past_its_timeout_gets_deadline_exceeded() {
        let mut svc = DeadlineLayer::new(limits(8, 2)).layer(tower::service_fn(never));
        let started = tokio::time::Instant::now();
        let resp = call(&mut svc, "CreateLink").await;
        assert_eq!(code(&resp), Some(tonic::Code::DeadlineExceeded));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        let msg = message(&resp);
        assert!(
            msg.contains("CreateLink") && msg.contains("--request-timeout-ms"),
            "{msg}"
        );

        // Verify has its own, longer timeout.
        let started = tokio::time::Instant::now();
        let resp = call(&mut svc, "Verify").await;
        assert_eq!(code(&resp), Some(tonic::Code::DeadlineExceeded));
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        assert!(message(&resp).contains("--verify-timeout-secs"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_has_no_timeout() {
        let mut svc = DeadlineLayer::new(limits(8, 2)).layer(tower::service_fn(never));
        // Far past every timeout, the stream is still being served.
        let outcome = tokio::time::timeout(
            Duration::from_secs(24 * 3600),
            call(&mut svc, "WatchStatus"),
        )
        .await;
        assert!(outcome.is_err(), "the stream was ended");
    }

    #[tokio::test]
    async fn calls_beyond_the_limits_are_refused_with_resource_exhausted_until_slots_free_up() {
        let mut svc = AdmissionLayer::new(limits(3, 1)).layer(tower::service_fn(answering));
        let verify = call(&mut svc, "Verify").await;
        assert_eq!(code(&verify), None, "the first Verify runs");
        let second = call(&mut svc, "Verify").await;
        assert_eq!(code(&second), Some(tonic::Code::ResourceExhausted));
        assert!(
            message(&second).contains("--max-concurrent-verifies 1")
                && message(&second).contains("retry later"),
            "{}",
            message(&second)
        );
        let watch = call(&mut svc, "WatchStatus").await;
        let status = call(&mut svc, "GetStatus").await;
        assert_eq!((code(&watch), code(&status)), (None, None));
        // Three calls hold the three slots (the refused Verify holds none).
        let refused = call(&mut svc, "ListLinks").await;
        assert_eq!(code(&refused), Some(tonic::Code::ResourceExhausted));
        assert!(message(&refused).contains("--max-concurrent-requests 3"));

        // A finished response frees its slots.
        verify.into_body().collect().await.expect("body");
        drop(watch);
        let again = call(&mut svc, "Verify").await;
        assert_eq!(code(&again), None, "{}", message(&again));
        let list = call(&mut svc, "ListLinks").await;
        assert_eq!(code(&list), None, "{}", message(&list));
        drop(status);
    }
}
