//! The etcd key layout, relative to the coordination prefix. Documented in
//! ARCHITECTURE.md; change both together.

pub const LINKS: &str = "links/";
pub const MIRRORS: &str = "mirrors/";
pub const PROGRESS: &str = "progress/";
pub const FAILURES: &str = "failures/";
pub const FETCHER_KIND: &str = "fetcher";
pub const ROUTER_KIND: &str = "router";
pub const GROUP_COORDINATOR_KIND: &str = "group-coordinator";

pub fn link(name: &str) -> String {
    format!("links/{name}")
}

pub fn mirrors_of(link: &str) -> String {
    format!("mirrors/{link}/")
}

pub fn mirror(link: &str, topic: &str) -> String {
    format!("mirrors/{link}/{topic}")
}

/// The mirror groups of `link` (`MirrorGroup`).
pub fn groups_of(link: &str) -> String {
    format!("groups/{link}/")
}

pub fn group(link: &str, group: &str) -> String {
    format!("groups/{link}/{group}")
}

/// The resource a group-coordinator owns to automate a mirror group
/// (its owner key is `owners/` + this).
pub fn group_resource(link: &str, group: &str) -> String {
    format!("group/{link}/{group}")
}

/// Producer ids the routers of `link` gave clients (`ProducerMapping`).
pub fn producer(link: &str, client_producer_id: i64) -> String {
    format!("producers/{link}/ids/{client_producer_id}")
}

/// Every producer-id mapping of `link`.
pub fn producers_of(link: &str) -> String {
    format!("producers/{link}/ids/")
}

/// The next block of client producer ids the routers of `link` may take.
pub fn producer_id_block(link: &str) -> String {
    format!("producers/{link}/next-block")
}

/// Promotions and rollbacks of `link` (`Promotion`), by id.
pub fn promotions_of(link: &str) -> String {
    format!("promotions/{link}/")
}

pub fn promotion(link: &str, id: &str) -> String {
    format!("promotions/{link}/{id}")
}

/// The ownership resource (`owners/promotion/<link>/<id>`, under the
/// lease of the orchestrator running it) of a running promotion: one
/// whose owner key is gone lost its orchestrator, and the leader finishes
/// or undoes it.
pub fn promotion_resource(link: &str, id: &str) -> String {
    format!("promotion/{link}/{id}")
}

pub fn progress_of(link: &str, topic: &str) -> String {
    format!("progress/{link}/{topic}/")
}

pub fn progress(link: &str, topic: &str, partition: i32) -> String {
    format!("progress/{link}/{topic}/{partition}")
}

pub fn failures_of(link: &str, topic: &str) -> String {
    format!("failures/{link}/{topic}/")
}

pub fn failure(link: &str, topic: &str, partition: i32) -> String {
    format!("failures/{link}/{topic}/{partition}")
}

/// The resource name a fetcher owns (under `owners/`) and whose writer
/// identity lives under `writers/`.
pub fn fetch_resource(link: &str, topic: &str, partition: i32) -> String {
    format!("fetch/{link}/{topic}/{partition}")
}

pub fn fetch_resources_of(link: &str) -> String {
    format!("fetch/{link}/")
}

pub fn fetch_resources_of_topic(link: &str, topic: &str) -> String {
    format!("fetch/{link}/{topic}/")
}

/// The writer (under `writers/`) of a partition's reverse mirror, which
/// writes to the source: a producer id of the source's, owned with the
/// partition's `fetch_resource`.
pub fn reverse_writer(link: &str, topic: &str, partition: i32) -> String {
    format!("reverse/{link}/{topic}/{partition}")
}

pub fn reverse_writers_of_topic(link: &str, topic: &str) -> String {
    format!("reverse/{link}/{topic}/")
}

/// Parses `fetch/<link>/<topic>/<partition>`. Link and topic names cannot
/// contain '/', so the split is unambiguous.
pub fn parse_fetch_resource(resource: &str) -> Option<(String, String, i32)> {
    let rest = resource.strip_prefix("fetch/")?;
    let mut parts = rest.splitn(3, '/');
    let link = parts.next()?;
    let topic = parts.next()?;
    let partition = parts.next()?.parse().ok()?;
    Some((link.to_string(), topic.to_string(), partition))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_resource_round_trips() {
        let r = fetch_resource("l1", "orders.v2", 7);
        assert_eq!(
            parse_fetch_resource(&r),
            Some(("l1".into(), "orders.v2".into(), 7))
        );
        assert_eq!(parse_fetch_resource("fetch/l1/t/x"), None);
        assert_eq!(parse_fetch_resource("other/l1/t/1"), None);
    }
}
