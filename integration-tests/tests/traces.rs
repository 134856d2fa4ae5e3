//! Traces end to end: the services export OTLP spans to a collector, one
//! CLI command is one trace across the gRPC hop to the orchestrator, and
//! one promotion is one trace across every service it involves.
//!
//! The collector is an OTLP/gRPC trace receiver inside the test (the
//! `opentelemetry-proto` generated server); everything else is the real bed.
//!
//! Mirroring itself has one hop of an operator action between our
//! processes, CLI → orchestrator: fetchers learn about new mirrors from
//! etcd, so their partition spans start their own traces. A promotion has
//! more: the orchestrator calls every router and the fetchers (and a
//! group-coordinator calls the orchestrator).
//!
//! Broker: librdkafka's mock cluster for the commands (span export, not
//! broker behaviour); real Kafka for the promotion, which needs a real
//! broker's admin and group APIs.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use cutover_integration_tests::cutover::{Cutover, Otlp};
use cutover_integration_tests::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

/// One received span, flattened with its resource's `service.name`.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    name: String,
    trace_id: String,
    parent_span_id: String,
    kind: i32,
    /// OpenTelemetry status code (0 unset, 1 ok, 2 error).
    status: i32,
    attributes: BTreeMap<String, any_value::Value>,
}

impl ReceivedSpan {
    fn str_attr(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key) {
            Some(any_value::Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    fn int_attr(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key) {
            Some(any_value::Value::IntValue(i)) => Some(*i),
            _ => None,
        }
    }
}

fn is_server(s: &ReceivedSpan) -> bool {
    s.kind == SpanKind::Server as i32
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, any_value::Value> {
    kvs.iter()
        .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?.value?)))
        .collect()
}

/// Every span received so far; `arrived` is notified on each export.
#[derive(Default)]
struct Received {
    spans: Mutex<Vec<ReceivedSpan>>,
    arrived: Condvar,
}

impl Received {
    fn lock(&self) -> MutexGuard<'_, Vec<ReceivedSpan>> {
        self.spans.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The first span matching `pred`, waiting for exports until `timeout`.
    fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&ReceivedSpan) -> bool,
    ) -> Result<ReceivedSpan> {
        self.wait_until(what, timeout, |spans| {
            spans.iter().find(|s| pred(s)).cloned()
        })
    }

    /// Waits until at least `n` spans match `pred` (each service exports
    /// on its own schedule, so the first one to arrive says nothing of the
    /// others).
    fn wait_for_count(
        &self,
        what: &str,
        timeout: Duration,
        n: usize,
        pred: impl Fn(&ReceivedSpan) -> bool,
    ) -> Result<usize> {
        self.wait_until(what, timeout, |spans| {
            let count = spans.iter().filter(|s| pred(s)).count();
            (count >= n).then_some(count)
        })
    }

    fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        found: impl Fn(&[ReceivedSpan]) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let mut spans = self.lock();
        loop {
            if let Some(t) = found(&spans) {
                return Ok(t);
            }
            let now = Instant::now();
            if now >= deadline {
                let seen: Vec<String> = spans
                    .iter()
                    .map(|s| format!("{} {} trace={}", s.service, s.name, s.trace_id))
                    .collect();
                bail!(
                    "no span {what} after {timeout:?}; received {}:\n{}",
                    seen.len(),
                    seen.join("\n")
                );
            }
            spans = self
                .arrived
                .wait_timeout(spans, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

struct Sink(Arc<Received>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut new = Vec::new();
        for rs in request.into_inner().resource_spans {
            let resource = attributes(&rs.resource.map(|r| r.attributes).unwrap_or_default());
            let service = match resource.get("service.name") {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                _ => String::new(),
            };
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                new.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: span.kind,
                    status: span.status.map_or(0, |s| s.code),
                    attributes: attributes(&span.attributes),
                });
            }
        }
        self.0.lock().extend(new);
        self.0.arrived.notify_all();
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Starts the receiver on a free port of `rt`; returns its endpoint.
fn start_receiver(rt: &tokio::runtime::Runtime, received: Arc<Received>) -> Result<String> {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .context("binding the trace receiver")?;
    let addr = listener.local_addr()?;
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Sink(received)))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    Ok(format!("http://{addr}"))
}

/// A receiver on a runtime of its own (kept alive by the caller), the
/// spans it got, and its endpoint.
fn receiver() -> Result<(tokio::runtime::Runtime, Arc<Received>, String)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let received = Arc::new(Received::default());
    let endpoint = start_receiver(&rt, received.clone())?;
    Ok((rt, received, endpoint))
}

/// The trace id from the CLI's `trace_id=<hex>` line on stderr.
fn printed_trace_id(stderr: &str) -> Result<String> {
    let id = stderr
        .lines()
        .find_map(|l| l.strip_prefix("trace_id="))
        .ok_or_else(|| anyhow!("no trace_id= line on stderr: {stderr:?}"))?;
    ensure!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "not a trace id: {id:?}"
    );
    Ok(id.to_string())
}

fn run_ok(what: &str, (code, out, err): (i32, String, String)) -> Result<(String, String)> {
    ensure!(code == 0, "{what} exited {code}: {out}{err}");
    Ok((out, err))
}

const ORCHESTRATOR: &str = "cutover-orchestrator";
const FETCHER: &str = "cutover-fetcher";
/// Exports of the orchestrator arrive within this.
const ARRIVAL: Duration = Duration::from_secs(10);

#[test]
fn cli_commands_are_traces_and_services_export_spans() -> Result<()> {
    const T: &str = "traced";
    const LINK: &str = "t1";
    let (rt, received, endpoint) = receiver()?;

    let bed = Bed::start("traces")?;
    bed.clusters.create_topic_both(T, 2)?;
    produce(bed.source_bootstrap(), T, 0, 100, &ProduceSpec::default())?;
    // The orchestrator exports within 100 ms of a span's end, so its spans
    // are awaited while it runs.
    let mut cutover = Cutover::start_with_otlp(
        &bed,
        Some(Otlp {
            endpoint: endpoint.clone(),
            batch_delay: Duration::from_millis(100),
        }),
    )?;
    // The fetcher's batch delay outlasts the test: its spans can only arrive
    // through the flush of a graceful shutdown.
    cutover.otlp = Some(Otlp {
        endpoint,
        batch_delay: Duration::from_secs(3600),
    });
    cutover.add_fetcher()?;

    // Each traced command prints its trace id and is a trace of its own.
    let (_, err) = run_ok(
        "link create",
        cutover.cli_raw(&[
            "--trace",
            "--json",
            "link",
            "create",
            LINK,
            "--source",
            bed.source_bootstrap(),
            "--target",
            bed.target_bootstrap(),
        ])?,
    )?;
    let link_trace = printed_trace_id(&err)?;
    let (out, err) = run_ok(
        "mirror add",
        cutover.cli_raw(&["mirror", "add", "--link", LINK, T, "--json", "--trace"])?,
    )?;
    let add_trace = printed_trace_id(&err)?;
    assert_ne!(link_trace, add_trace, "two commands, one trace");
    let added: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("--json output: {out}"))?;
    assert_eq!(added["mirrors"][0]["topic"], T, "{added}");

    // The orchestrator continued the CLI's trace, under its own name. (Its
    // handler's child spans, e.g. Kafka connections, are in the trace too.)
    let add = received.wait_for(
        "served by the orchestrator in the trace of `mirror add`",
        ARRIVAL,
        |s| s.trace_id == add_trace && s.service == ORCHESTRATOR && is_server(s),
    )?;
    assert_eq!(add.name, "cutover.v1.Orchestrator/AddMirrors", "{add:?}");
    assert_eq!(add.str_attr("rpc.system"), Some("grpc"), "{add:?}");
    assert_eq!(
        add.str_attr("rpc.service"),
        Some("cutover.v1.Orchestrator"),
        "{add:?}"
    );
    assert_eq!(add.str_attr("rpc.method"), Some("AddMirrors"), "{add:?}");
    assert!(
        !add.parent_span_id.is_empty() && add.parent_span_id != "0".repeat(16),
        "the span must hang below the CLI's context: {add:?}"
    );
    let create = received.wait_for(
        "served by the orchestrator in the trace of `link create`",
        ARRIVAL,
        |s| s.trace_id == link_trace && s.service == ORCHESTRATOR && is_server(s),
    )?;
    assert_eq!(create.name, "cutover.v1.Orchestrator/CreateLink");

    // A pipeline's TRACEPARENT is joined (without --trace, and silently),
    // and tracing leaves stdout as it was.
    const JOINED_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const JOINED_SPAN: &str = "00f067aa0ba902b7";
    let traceparent = format!("00-{JOINED_TRACE}-{JOINED_SPAN}-01");
    let (plain, _) = run_ok(
        "link get",
        cutover.cli_raw(&["--json", "link", "get", LINK])?,
    )?;
    let (joined, err) = run_ok(
        "link get with TRACEPARENT",
        cutover.cli_env(
            &["--json", "link", "get", LINK],
            &[("TRACEPARENT", traceparent.as_str())],
        )?,
    )?;
    assert_eq!(joined, plain, "--json output changed by tracing");
    assert!(!err.contains("trace_id="), "{err}");
    let get = received.wait_for("served in the joined trace", ARRIVAL, |s| {
        s.trace_id == JOINED_TRACE && s.service == ORCHESTRATOR && is_server(s)
    })?;
    assert_eq!(get.name, "cutover.v1.Orchestrator/GetLink", "{get:?}");
    assert_eq!(get.parent_span_id, JOINED_SPAN, "{get:?}");
    assert_ne!(
        get.status, 2,
        "a successful call marked as an error: {get:?}"
    );

    // A failed call is an error span carrying the gRPC code (5, NOT_FOUND).
    let (code, _, err) = cutover.cli_raw(&["--trace", "link", "get", "no-such-link"])?;
    assert_eq!(code, 2, "{err}");
    let failed_trace = printed_trace_id(&err)?;
    let failed = received.wait_for("the failed call's span", ARRIVAL, |s| {
        s.trace_id == failed_trace && s.service == ORCHESTRATOR && is_server(s)
    })?;
    assert_eq!(failed.status, 2, "not marked as an error: {failed:?}");
    assert_eq!(
        failed.int_attr("rpc.grpc.status_code"),
        Some(5),
        "{failed:?}"
    );
    let (plain, _) = run_ok("link get", cutover.cli_raw(&["link", "get", LINK])?)?;
    let (traced, err) = run_ok(
        "link get --trace",
        cutover.cli_raw(&["--trace", "link", "get", LINK])?,
    )?;
    assert_eq!(traced, plain, "human output changed by --trace");
    printed_trace_id(&err)?;

    // The fetcher took both partitions; its server continues a caller's
    // trace like the orchestrator's does.
    cutover.wait_owners(LINK, Duration::from_secs(20), |o| {
        o.get("fetcher-1") == Some(&2)
    })?;
    const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const CALLER_SPAN: &str = "b7ad6b7169203331";
    let fetcher_grpc = format!("http://{}", cutover.fetchers[0].grpc);
    let progress = rt.block_on(async {
        use cutover_proto::fetcher::v1 as pb;
        let mut client = pb::fetcher_client::FetcherClient::connect(fetcher_grpc).await?;
        let mut req = tonic::Request::new(pb::GetProgressRequest {});
        req.metadata_mut().insert(
            "traceparent",
            format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01").parse()?,
        );
        anyhow::Ok(client.get_progress(req).await?.into_inner())
    })?;
    assert_eq!(progress.fetcher_id, "fetcher-1");

    // SIGTERM: the fetcher stops its partitions (their spans end) and must
    // flush them before it exits.
    let fetcher = &cutover.fetchers[0].process;
    fetcher.sigterm()?;
    let status = fetcher.wait_exit(Duration::from_secs(20))?;
    assert!(status.success(), "fetcher exited {status}");
    let fetcher_span = |what: &str, pred: &dyn Fn(&ReceivedSpan) -> bool| {
        received.wait_for(what, Duration::from_secs(5), |s| {
            s.service == FETCHER && pred(s)
        })
    };
    let api = fetcher_span("served in the caller's trace", &|s| {
        s.trace_id == CALLER_TRACE && is_server(s)
    })?;
    assert_eq!(
        api.name, "cutover.fetcher.v1.Fetcher/GetProgress",
        "{api:?}"
    );
    assert_eq!(api.parent_span_id, CALLER_SPAN, "{api:?}");
    for partition in 0..2 {
        for name in ["partition", "replicate"] {
            let s = fetcher_span(&format!("{name} of {T}/{partition}"), &|s| {
                s.name == name && s.int_attr("partition") == Some(partition)
            })?;
            assert_eq!(s.str_attr("link"), Some(LINK), "{s:?}");
            assert_eq!(s.str_attr("topic"), Some(T), "{s:?}");
        }
    }
    Ok(())
}

const ROUTER: &str = "cutover-router";
const GROUP_COORDINATOR: &str = "cutover-group-coordinator";

/// Issue 8: one promotion is one trace across the services, on real Kafka.
/// A group-coordinator's automatic promotion of a group starts a trace
/// (`auto_promotion`) that the orchestrator's Promote continues and that
/// reaches the routers it asks about the group's members; a topic
/// promotion run with `cutover --trace` is one trace through the
/// orchestrator's Promote, every router's HoldProduce and ReleaseProduce,
/// and the fetcher's WaitForOffset.
#[test]
fn a_promotion_is_one_trace_across_orchestrator_routers_fetchers_and_group_coordinator(
) -> Result<()> {
    use cutover_integration_tests::cutover::{routers_bootstrap, wait_until};
    use cutover_integration_tests::group::{members_at, GroupLog, Member};
    const T: &str = "traced-promotion";
    const G: &str = "traced-group";
    const WAIT: Duration = Duration::from_secs(60);
    let (_rt, received, endpoint) = receiver()?;
    let bed = RealBed::start("traces_promotion")?;
    bed.kafka.create_topic(Side::Source, T, 1, &[])?;
    let mut cutover = Cutover::start_with_otlp(
        &bed,
        Some(Otlp {
            endpoint,
            batch_delay: Duration::from_millis(100),
        }),
    )?;
    cutover.create_link(&bed, "l1", &[])?;
    let r1 = cutover.start_router(1, "l1")?;
    let r2 = cutover.start_router(2, "l1")?;
    cutover.add_fetcher()?;
    cutover.cli_json(&["mirror", "add", "--link", "l1", T])?;
    produce(bed.source_bootstrap(), T, 0, 50, &ProduceSpec::default())?;
    cutover.wait_in_sync("l1", WAIT)?;

    let via = routers_bootstrap(&[&r1, &r2]);
    let log = Arc::new(Mutex::new(GroupLog::default()));
    let member = Member::start(&via, G, T, "traced-member", log)?;
    wait_until("the member to join", WAIT, || {
        Ok(members_at(bed.source_bootstrap(), G)? == 1)
    })?;
    cutover.cli_json(&["group", "add", "--link", "l1", G])?;
    let _gc = cutover.start_group_coordinator("gc-traced")?;
    let auto = received.wait_for("of an automatic promotion", WAIT, |s| {
        s.service == GROUP_COORDINATOR && s.name == "auto_promotion"
    })?;
    assert_eq!(auto.str_attr("group"), Some(G), "{auto:?}");
    let promote = received.wait_for(
        "of Promote in the automatic promotion's trace",
        ARRIVAL,
        |s| s.trace_id == auto.trace_id && s.service == ORCHESTRATOR && is_server(s),
    )?;
    assert_eq!(
        promote.name, "cutover.v1.Orchestrator/Promote",
        "{promote:?}"
    );
    let asked = received.wait_for(
        "of a router asked about the group's members",
        ARRIVAL,
        |s| s.trace_id == auto.trace_id && s.service == ROUTER && is_server(s),
    )?;
    assert!(
        asked.name.ends_with("/ListGroupMembers") || asked.name.ends_with("/GetState"),
        "{asked:?}"
    );
    member.stop()?;

    let (_, err) = run_ok(
        "promote",
        cutover.cli_raw(&["--trace", "--json", "promote", "--link", "l1", T])?,
    )?;
    let trace = printed_trace_id(&err)?;
    let promote = received.wait_for("of Promote in the CLI's trace", ARRIVAL, |s| {
        s.trace_id == trace && s.service == ORCHESTRATOR && is_server(s)
    })?;
    assert_eq!(
        promote.name, "cutover.v1.Orchestrator/Promote",
        "{promote:?}"
    );
    for method in ["HoldProduce", "ReleaseProduce"] {
        let name = format!("cutover.router.v1.Router/{method}");
        received.wait_for_count(
            &format!("of {method} from both routers in the promotion's trace"),
            ARRIVAL,
            2,
            |s| s.trace_id == trace && s.service == ROUTER && is_server(s) && s.name == name,
        )?;
    }
    received.wait_for("of WaitForOffset in the promotion's trace", ARRIVAL, |s| {
        s.trace_id == trace
            && s.service == FETCHER
            && is_server(s)
            && s.name == "cutover.fetcher.v1.Fetcher/WaitForOffset"
    })?;
    Ok(())
}
