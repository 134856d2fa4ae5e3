//! Prometheus metrics of the router (prefix `cutover_router_`), per Kafka
//! API: requests, error codes answered, latency, bytes; and connections,
//! with why each one the router closed was closed.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Requests answered (or, for acks=0, handled), by API.
    pub requests: IntCounterVec,
    /// Error codes in answers, by API and Kafka error name: one per
    /// partition or group answered with it.
    pub errors: IntCounterVec,
    /// From a request read to its answer ready, by API.
    pub latency: HistogramVec,
    pub bytes_in: IntCounterVec,
    pub bytes_out: IntCounterVec,
    pub connections: IntGauge,
    /// Connections the router closed, by reason (too_large, negative,
    /// truncated, unknown_api, unsupported, malformed, encode, io).
    pub closed: IntCounterVec,
    /// The link's mirror topics, by primary (source, target).
    pub mirrored_topics: IntGaugeVec,
    /// Topic primaries that changed while the router ran, by new primary.
    pub primary_changes: IntCounterVec,
    /// The link's mirror groups, by home (source, target).
    pub mirrored_groups: IntGaugeVec,
    /// Group homes that changed while the router ran, by new home.
    pub home_changes: IntCounterVec,
    /// Filler batches replaced by empty batches in fetch responses.
    pub fillers_removed: IntCounter,
    /// Produce batches the router rewrote that break a broker rule (must
    /// stay 0).
    pub produce_rule_violations: IntCounter,
    /// Client producer ids mapped to a new upstream producer, by cluster.
    pub producers_mapped: IntCounterVec,
    /// Partitions of reads sent upstream again after their leader moved
    /// (or could not be reached), by API: absorbed, not answered.
    pub upstream_retries: IntCounterVec,
    /// Fetches read ahead, by what became of them (used, unmatched,
    /// empty, failed).
    pub readahead: IntCounterVec,
    /// Partitions of Fetch answers whose records were written from the
    /// upstream buffer (`encoded.rs`).
    pub fetch_spliced: IntCounter,
    /// Records of Produce partitions sent upstream from the client's buffer.
    pub produce_spliced: IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("cutover_router".into()), None)?;
        let requests =
            IntCounterVec::new(Opts::new("requests_total", "Requests handled"), &["api"])?;
        let errors = IntCounterVec::new(
            Opts::new(
                "errors_total",
                "Error codes answered (per partition or group)",
            ),
            &["api", "error"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("request_seconds", "From request read to answer ready").buckets(
                vec![
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ],
            ),
            &["api"],
        )?;
        let bytes_in =
            IntCounterVec::new(Opts::new("request_bytes_total", "Request bytes"), &["api"])?;
        let bytes_out = IntCounterVec::new(
            Opts::new("response_bytes_total", "Response bytes"),
            &["api"],
        )?;
        let connections = IntGauge::new("connections", "Open client connections")?;
        let closed = IntCounterVec::new(
            Opts::new(
                "connections_closed_total",
                "Client connections the router closed, by reason",
            ),
            &["reason"],
        )?;
        let mirrored_topics = IntGaugeVec::new(
            Opts::new("mirrored_topics", "Mirror topics of the link, by primary"),
            &["primary"],
        )?;
        let primary_changes = IntCounterVec::new(
            Opts::new(
                "primary_changes_total",
                "Topic primaries that changed, by new primary",
            ),
            &["primary"],
        )?;
        let mirrored_groups = IntGaugeVec::new(
            Opts::new("mirrored_groups", "Mirror groups of the link, by home"),
            &["home"],
        )?;
        let home_changes = IntCounterVec::new(
            Opts::new(
                "group_home_changes_total",
                "Group homes that changed, by new home",
            ),
            &["home"],
        )?;
        let fillers_removed = IntCounter::new(
            "fillers_removed_total",
            "Filler batches replaced by empty batches in fetch responses",
        )?;
        let produce_rule_violations = IntCounter::new(
            "produce_rule_violations_total",
            "Produce batches the router rewrote that break a broker rule",
        )?;
        let producers_mapped = IntCounterVec::new(
            Opts::new(
                "producers_mapped_total",
                "Client producer ids given an upstream producer, by cluster",
            ),
            &["cluster"],
        )?;
        let upstream_retries = IntCounterVec::new(
            Opts::new(
                "upstream_retries_total",
                "Partitions of reads sent upstream again after a leader move",
            ),
            &["api"],
        )?;
        registry.register(Box::new(upstream_retries.clone()))?;
        let readahead = IntCounterVec::new(
            Opts::new(
                "fetch_readahead_total",
                "Fetches read ahead of a client, by outcome",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(readahead.clone()))?;
        let fetch_spliced = IntCounter::new(
            "fetch_spliced_partitions_total",
            "Partitions of Fetch answers whose records were written from the buffer they came in",
        )?;
        registry.register(Box::new(fetch_spliced.clone()))?;
        let produce_spliced = IntCounter::new(
            "produce_spliced_partitions_total",
            "Partitions of Produce requests whose records went upstream from the buffer they came in",
        )?;
        registry.register(Box::new(produce_spliced.clone()))?;
        registry.register(Box::new(produce_rule_violations.clone()))?;
        registry.register(Box::new(producers_mapped.clone()))?;
        registry.register(Box::new(mirrored_topics.clone()))?;
        registry.register(Box::new(primary_changes.clone()))?;
        registry.register(Box::new(mirrored_groups.clone()))?;
        registry.register(Box::new(home_changes.clone()))?;
        registry.register(Box::new(fillers_removed.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(bytes_in.clone()))?;
        registry.register(Box::new(bytes_out.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(closed.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            errors,
            latency,
            bytes_in,
            bytes_out,
            connections,
            closed,
            mirrored_topics,
            primary_changes,
            mirrored_groups,
            home_changes,
            fillers_removed,
            produce_rule_violations,
            producers_mapped,
            upstream_retries,
            readahead,
            fetch_spliced,
            produce_spliced,
        })
    }

    /// Counts a non-zero error code answered for `api`.
    pub fn error(&self, api: kafka_protocol::messages::ApiKey, code: i16) {
        if code != 0 {
            self.errors
                .with_label_values(&[api_name(api), cutover_kafka::error_name(code)])
                .inc();
        }
    }
}

/// The label of an API: its Kafka name.
pub fn api_name(api: kafka_protocol::messages::ApiKey) -> &'static str {
    use kafka_protocol::messages::ApiKey::*;
    match api {
        Produce => "Produce",
        Fetch => "Fetch",
        ListOffsets => "ListOffsets",
        Metadata => "Metadata",
        OffsetCommit => "OffsetCommit",
        OffsetFetch => "OffsetFetch",
        FindCoordinator => "FindCoordinator",
        JoinGroup => "JoinGroup",
        Heartbeat => "Heartbeat",
        LeaveGroup => "LeaveGroup",
        SyncGroup => "SyncGroup",
        ApiVersions => "ApiVersions",
        InitProducerId => "InitProducerId",
        OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        AddPartitionsToTxn => "AddPartitionsToTxn",
        AddOffsetsToTxn => "AddOffsetsToTxn",
        EndTxn => "EndTxn",
        TxnOffsetCommit => "TxnOffsetCommit",
        _ => "other",
    }
}
