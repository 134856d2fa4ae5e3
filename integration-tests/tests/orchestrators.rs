//! Several orchestrators: all serve the API over the same state in etcd, one
//! leads background work, and leadership moves when the leader dies.
//!
//! Broker: librdkafka's mock cluster, because orchestrator election and API over etcd, not broker behaviour.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use cutover_integration_tests::cutover::Cutover;
use cutover_integration_tests::*;

fn leader(bed: &Bed) -> Result<Option<String>> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([bed.etcd_endpoint()], None).await?;
        let r = c.get("/cutover/v1/leader/orchestrator", None).await?;
        Ok(r.kvs()
            .first()
            .and_then(|kv| kv.value_str().ok())
            .map(str::to_string))
    })
}

fn wait_leader(bed: &Bed, timeout: Duration, pred: impl Fn(&str) -> bool) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = leader(bed)? {
            if pred(&l) {
                return Ok(l);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "no matching leader within {timeout:?} (now {:?})",
                leader(bed)?
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_orchestrator_serves_one_leads_and_leadership_moves_on_death() -> Result<()> {
    let bed = Bed::start("orchestrators")?;
    let mut cutover = Cutover::start(&bed)?;
    let second = cutover.add_orchestrator()?;

    // Written through one, read through the other.
    let (code, _, err) = cutover.cli_raw_at(
        &second,
        &[
            "link",
            "create",
            "l1",
            "--source",
            bed.source_bootstrap(),
            "--target",
            bed.target_bootstrap(),
        ],
    )?;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cutover.cli_raw(&["--json", "link", "get", "l1"])?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(bed.source_bootstrap()), "{out}");

    let first_leader = wait_leader(&bed, Duration::from_secs(15), |_| true)?;
    assert!(
        first_leader == "orchestrator-1" || first_leader == "orchestrator-2",
        "{first_leader}"
    );

    // Kill the leader: the other takes over once the leader's lease (3 s) expires.
    let survivor_server = if first_leader == "orchestrator-1" {
        cutover.orchestrator.kill9()?;
        second.clone()
    } else {
        cutover.more_orchestrators[0].1.kill9()?;
        cutover.server.clone()
    };
    let killed_at = Instant::now();
    let new_leader = wait_leader(&bed, Duration::from_secs(20), |l| l != first_leader)?;
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "failover took {:?}",
        killed_at.elapsed()
    );
    assert_ne!(new_leader, first_leader);

    // The survivor still serves.
    let (code, out, err) = cutover.cli_raw_at(&survivor_server, &["--json", "link", "list"])?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"l1\""), "{out}");
    Ok(())
}
