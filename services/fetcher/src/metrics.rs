//! Prometheus metrics of the fetcher. Labels: link, topic, partition.
//!
//! The per-partition gauges (lag, target log end) describe a partition this
//! fetcher copies; they are removed when its task ends here (hand-over,
//! lease loss, failure), so summing them over all fetchers counts each
//! partition once. The per-partition counters are totals of what this
//! fetcher wrote: summed over fetchers each write counts once, so they stay
//! (removing them at a hand-over would also drop a fatal error or a rule
//! violation before a scrape saw it) until the mirror itself is removed.

use std::collections::HashMap;

use prometheus::core::Collector;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::progress::PartitionKey;

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

fn labels(key: &PartitionKey) -> [String; 3] {
    [
        key.link.clone(),
        key.topic.clone(),
        key.partition.to_string(),
    ]
}

impl Metrics {
    pub fn partition(&self, key: &PartitionKey) -> PartitionMetrics {
        let l = labels(key);
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

impl Metrics {
    /// Removes the partition's gauges: its task ended on this fetcher,
    /// which no longer copies it (another fetcher reports it now).
    pub fn forget_partition(&self, key: &PartitionKey) {
        let l = labels(key);
        // Absent when the task never got that far (e.g. still connecting).
        let _ = self.lag.remove_label_values(&l);
        let _ = self.target_log_end.remove_label_values(&l);
    }

    /// Removes every per-partition series of mirrors for which `keep(link,
    /// topic)` is false (mirrors removed, links deleted).
    pub fn retain_mirrors(&self, keep: impl Fn(&str, &str) -> bool) {
        for c in [
            &self.bytes,
            &self.records,
            &self.fillers,
            &self.errors,
            &self.lost_records,
            &self.rule_violations,
        ] {
            for_stale_series(c, &keep, |l| {
                let _ = c.remove(l);
            });
        }
        for g in [&self.lag, &self.target_log_end] {
            for_stale_series(g, &keep, |l| {
                let _ = g.remove(l);
            });
        }
    }
}

/// Calls `f` with the labels of every series of `c` that `keep` refuses.
fn for_stale_series(
    c: &dyn Collector,
    keep: &impl Fn(&str, &str) -> bool,
    mut f: impl FnMut(&HashMap<&str, &str>),
) {
    for family in c.collect() {
        for m in family.get_metric() {
            let l: HashMap<&str, &str> = m
                .get_label()
                .iter()
                .map(|p| (p.name(), p.value()))
                .collect();
            let link = l.get("link").copied().unwrap_or_default();
            let topic = l.get("topic").copied().unwrap_or_default();
            if !keep(link, topic) {
                f(&l);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(topic: &str, partition: i32) -> PartitionKey {
        PartitionKey {
            link: "l1".into(),
            topic: topic.into(),
            partition,
        }
    }

    /// (metric name, topic, partition) of every exported per-partition series.
    fn series(m: &Metrics) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for family in m.registry.gather() {
            for s in family.get_metric() {
                let label = |n: &str| {
                    s.get_label()
                        .iter()
                        .find(|p| p.name() == n)
                        .map(|p| p.value().to_owned())
                };
                if let (Some(t), Some(p)) = (label("topic"), label("partition")) {
                    out.push((family.name().to_owned(), t, p));
                }
            }
        }
        out.sort();
        out
    }

    fn exercise(m: &Metrics, key: &PartitionKey) {
        let pm = m.partition(key);
        pm.lag.set(3);
        pm.target_log_end.set(10);
        pm.records.inc_by(10);
        m.errors
            .with_label_values(&[
                &key.link,
                &key.topic,
                &key.partition.to_string(),
                "transient",
            ])
            .inc();
    }

    #[test]
    fn a_partition_that_ends_here_leaves_no_gauges_and_keeps_its_totals() {
        let m = Metrics::new().expect("metrics");
        exercise(&m, &key("t", 0));
        exercise(&m, &key("t", 1));
        m.forget_partition(&key("t", 0));
        let s = series(&m);
        let of = |name: &str, p: &str| s.iter().any(|(n, _, q)| n == name && q == p);
        assert!(!of("cutover_fetcher_lag_records", "0"), "{s:?}");
        assert!(!of("cutover_fetcher_target_log_end_offset", "0"), "{s:?}");
        assert!(of("cutover_fetcher_lag_records", "1"), "{s:?}");
        assert!(of("cutover_fetcher_target_log_end_offset", "1"), "{s:?}");
        assert!(of("cutover_fetcher_records_total", "0"), "{s:?}");
        assert!(of("cutover_fetcher_errors_total", "0"), "{s:?}");
        // Forgetting one that has no series is fine.
        m.forget_partition(&key("never", 7));
    }

    #[test]
    fn a_removed_mirror_leaves_no_series() {
        let m = Metrics::new().expect("metrics");
        exercise(&m, &key("gone", 0));
        exercise(&m, &key("kept", 0));
        m.retain_mirrors(|link, topic| link == "l1" && topic == "kept");
        let s = series(&m);
        assert!(s.iter().all(|(_, t, _)| t == "kept"), "{s:?}");
        // Every per-partition family of the kept mirror is still there.
        assert_eq!(s.len(), 8, "{s:?}");
    }
}
