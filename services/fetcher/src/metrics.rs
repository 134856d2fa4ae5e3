//! Prometheus metrics of the fetcher. Labels: link, topic, partition.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub bytes: IntCounterVec,
    pub records: IntCounterVec,
    pub fillers: IntCounterVec,
    pub lag: IntGaugeVec,
    pub target_log_end: IntGaugeVec,
    pub errors: IntCounterVec,
    pub lost_records: IntCounterVec,
    pub rule_violations: IntCounterVec,
    pub owned_partitions: prometheus::IntGauge,
    /// etcd leases this fetcher lost (it stopped writing and joined again).
    pub lease_losses: prometheus::IntCounter,
}

const TP: &[&str] = &["link", "topic", "partition"];

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("cutover_fetcher".into()), None)?;
        let bytes = IntCounterVec::new(
            Opts::new("bytes_total", "Record batch bytes written to the target"),
            TP,
        )?;
        let records = IntCounterVec::new(
            Opts::new(
                "records_total",
                "Source offsets written to the target (data and fillers)",
            ),
            TP,
        )?;
        let fillers = IntCounterVec::new(
            Opts::new(
                "filler_records_total",
                "Filler records written (markers, aborted data, holes, log start, lost)",
            ),
            TP,
        )?;
        let lag = IntGaugeVec::new(
            Opts::new("lag_records", "Source log end minus target log end"),
            TP,
        )?;
        let target_log_end = IntGaugeVec::new(
            Opts::new("target_log_end_offset", "Acknowledged target log end"),
            TP,
        )?;
        let errors = IntCounterVec::new(
            Opts::new("errors_total", "Errors by kind"),
            &["link", "topic", "partition", "kind"],
        )?;
        let lost_records = IntCounterVec::new(
            Opts::new(
                "lost_records_total",
                "Source records deleted by retention before they were copied",
            ),
            TP,
        )?;
        let rule_violations = IntCounterVec::new(Opts::new("produce_rule_violations_total", "Produce requests refused by our own check of Kafka's client rules (a bug if non-zero)"), TP)?;
        let owned_partitions =
            prometheus::IntGauge::new("owned_partitions", "Partitions this fetcher owns")?;
        for c in [
            &bytes,
            &records,
            &fillers,
            &errors,
            &lost_records,
            &rule_violations,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        for g in [&lag, &target_log_end] {
            registry.register(Box::new(g.clone()))?;
        }
        registry.register(Box::new(owned_partitions.clone()))?;
        let lease_losses = prometheus::IntCounter::new(
            "lease_losses_total",
            "etcd leases lost (every partition stopped writing, then the fetcher joined again)",
        )?;
        registry.register(Box::new(lease_losses.clone()))?;
        Ok(Metrics {
            registry,
            bytes,
            records,
            fillers,
            lag,
            target_log_end,
            errors,
            lost_records,
            rule_violations,
            owned_partitions,
            lease_losses,
        })
    }
}

/// The metrics of one partition, resolved once instead of per batch.
pub struct PartitionMetrics {
    pub bytes: prometheus::IntCounter,
    pub records: prometheus::IntCounter,
    pub fillers: prometheus::IntCounter,
    pub lag: prometheus::IntGauge,
    pub target_log_end: prometheus::IntGauge,
    pub lost_records: prometheus::IntCounter,
    pub rule_violations: prometheus::IntCounter,
}

impl Metrics {
    pub fn partition(&self, key: &crate::progress::PartitionKey) -> PartitionMetrics {
        let p = key.partition.to_string();
        let l = [key.link.as_str(), key.topic.as_str(), p.as_str()];
        PartitionMetrics {
            bytes: self.bytes.with_label_values(&l),
            records: self.records.with_label_values(&l),
            fillers: self.fillers.with_label_values(&l),
            lag: self.lag.with_label_values(&l),
            target_log_end: self.target_log_end.with_label_values(&l),
            lost_records: self.lost_records.with_label_values(&l),
            rule_violations: self.rule_violations.with_label_values(&l),
        }
    }
}
