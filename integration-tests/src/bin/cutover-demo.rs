//! `just demo`: a whole live migration on local real Apache Kafka clusters.
//!
//! Starts etcd, two real Kafka clusters (source: 1 broker of the older
//! pinned line, target: 3 brokers of the newer; one JVM each), and the
//! orchestrator, two fetchers, two routers and a group-coordinator as real
//! processes. Two producers and a consumer group of two members run on the
//! source directly; then, through the real `cutover` CLI: mirror the
//! topics, roll the producers to the routers one by one, roll the group's
//! members one by one (the group-coordinator promotes the group once every
//! member comes through the routers), promote the topics, roll them and the
//! group back, promote again, and detach. The report gives each promotion's
//! produce stall and the counts: records acknowledged, failed, consumed,
//! redelivered, proved identical.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use cutover_integration_tests::cutover::{routers_bootstrap, wait_until, Cutover};
use cutover_integration_tests::group::{lock, members_at, GroupLog, Member};
use cutover_integration_tests::*;

const ORDERS: (&str, i32) = ("orders", 6);
const PAYMENTS: (&str, i32) = ("payments", 3);
const GROUP: &str = "billing";
const WAIT: Duration = Duration::from_secs(120);
/// Records per second of each producer.
const RATE: u64 = 500;

fn step(msg: &str) {
    println!("\n\x1b[1m==> {msg}\x1b[0m");
}

fn show(cutover: &Cutover, args: &[&str]) -> Result<()> {
    println!("$ cutover {}", args.join(" "));
    let (code, out, err) = cutover.cli_raw(args)?;
    print!("{out}");
    eprint!("{err}");
    if code != 0 {
        bail!("cutover {} exited with {code}", args.join(" "));
    }
    Ok(())
}

/// Runs a promote or rollback through the CLI (shown), and returns its
/// produce stall in ms.
fn moved(cutover: &Cutover, args: &[&str]) -> Result<i64> {
    show(cutover, args)?;
    let ps = cutover.cli_json(&["promotions", "--link", "demo"])?;
    let p = &ps[0];
    if p["step"] != "done" {
        bail!("{} did not end DONE: {p:#}", args.join(" "));
    }
    Ok(p["stall_ms"].as_i64().unwrap_or(0))
}

fn partitions((topic, n): (&str, i32)) -> Vec<(String, i32)> {
    (0..n).map(|p| (topic.to_owned(), p)).collect()
}

/// A producer of the demo's application and what it wrote so far.
struct App {
    name: &'static str,
    load: LoadGenerator,
    first_seq: u64,
}

fn start_app(
    name: &'static str,
    topic: (&'static str, i32),
    bootstrap: &str,
    first_seq: u64,
) -> Result<App> {
    let spec = ProduceSpec {
        codec: Codec::Lz4,
        mode: ProduceMode::Idempotent,
        first_seq,
        ..ProduceSpec::default()
    };
    let load = LoadGenerator::start(bootstrap, &partitions(topic), RATE, spec)?;
    load.wait_acked(RATE / 2, WAIT)?;
    Ok(App {
        name,
        load,
        first_seq,
    })
}

#[derive(Default)]
struct Totals {
    acked: u64,
    failed: u64,
}

impl Totals {
    fn add(&mut self, app: App) -> Result<()> {
        let r = app.load.stop()?;
        self.acked += r.total_acked();
        self.failed += r.total_failed();
        println!(
            "{} stopped: {} records acknowledged, {} failed",
            app.name,
            r.total_acked(),
            r.total_failed()
        );
        Ok(())
    }
}

fn main() -> Result<()> {
    let started = Instant::now();
    step("starting etcd and two Apache Kafka clusters (source: 1 broker, target: 3 brokers)");
    let bed = RealBed::start_own("demo")?;
    for (t, n) in [ORDERS, PAYMENTS] {
        // Only on the source: `mirror add` creates the target topics.
        bed.kafka.create_topic(Side::Source, t, n, &[])?;
    }
    println!(
        "etcd   {}\nsource {} (Kafka {})\ntarget {} (Kafka {})\nlogs   {}",
        bed.etcd_endpoint(),
        bed.source_bootstrap(),
        bed.kafka.source.version(),
        bed.target_bootstrap(),
        bed.kafka.target.version(),
        bed.log_dir().display()
    );

    step("the application on the source: two producers (orders, payments) and group `billing` (2 members) reading orders");
    let mut totals = Totals::default();
    let mut orders_app = start_app(
        "orders producer (direct)",
        ORDERS,
        bed.source_bootstrap(),
        0,
    )?;
    let mut payments_app = start_app(
        "payments producer (direct)",
        PAYMENTS,
        bed.source_bootstrap(),
        0,
    )?;
    let log = Arc::new(Mutex::new(GroupLog::default()));
    let mut members = vec![
        Member::start(
            bed.source_bootstrap(),
            GROUP,
            ORDERS.0,
            "billing-1 (direct)",
            log.clone(),
        )?,
        Member::start(
            bed.source_bootstrap(),
            GROUP,
            ORDERS.0,
            "billing-2 (direct)",
            log.clone(),
        )?,
    ];
    wait_until("the group to consume", WAIT, || {
        Ok(members_at(bed.source_bootstrap(), GROUP)? == 2 && !lock(&log).seen.is_empty())
    })?;

    step("starting the orchestrator, two fetchers and two routers (real binaries)");
    let mut cutover = Cutover::start(&bed)?;
    cutover.add_fetcher()?;
    cutover.add_fetcher()?;
    show(
        &cutover,
        &[
            "link",
            "create",
            "demo",
            "--source",
            bed.source_bootstrap(),
            "--target",
            bed.target_bootstrap(),
        ],
    )?;
    let r1 = cutover.start_router(1, "demo")?;
    let r2 = cutover.start_router(2, "demo")?;
    let via = routers_bootstrap(&[&r1, &r2]);
    println!("routers: {via} (what the applications' bootstrap.servers becomes)");

    step("mirroring the topics with identical offsets");
    show(
        &cutover,
        &[
            "mirror",
            "add",
            "--link",
            "demo",
            "--include",
            "orders|payments",
        ],
    )?;
    wait_until("the mirror to copy what is there", WAIT, || {
        let s = cutover.cli_json(&["status", "--link", "demo"])?;
        Ok(s["topics"].as_array().is_some_and(|ts| {
            ts.len() == 2
                && ts
                    .iter()
                    .all(|t| t["total_lag"].as_i64() < Some(2 * RATE as i64))
        }))
    })?;
    show(&cutover, &["status", "--link", "demo"])?;

    step("rolling the producers to the routers, one by one (writes keep flowing)");
    let next = orders_app.first_seq + 10_000_000;
    let old = std::mem::replace(
        &mut orders_app,
        start_app("orders producer (through the routers)", ORDERS, &via, next)?,
    );
    totals.add(old)?;
    let next = payments_app.first_seq + 10_000_000;
    let old = std::mem::replace(
        &mut payments_app,
        start_app(
            "payments producer (through the routers)",
            PAYMENTS,
            &via,
            next,
        )?,
    );
    totals.add(old)?;

    step("registering the group; a group-coordinator promotes it once every member comes through the routers");
    show(&cutover, &["group", "add", "--link", "demo", GROUP])?;
    let _gc = cutover.start_group_coordinator("group-coordinator-1")?;
    show(&cutover, &["group", "list", "--link", "demo"])?;

    step("rolling the group's members to the routers, one by one");
    members.remove(0).stop()?;
    members.push(Member::start(
        &via,
        GROUP,
        ORDERS.0,
        "billing-1 (through the routers)",
        log.clone(),
    )?);
    wait_until(
        "the group's evidence to show one member through the routers",
        WAIT,
        || {
            let gs = cutover.cli_json(&["group", "list", "--link", "demo"])?;
            let through = gs[0]["members"].as_array().map_or(0, |ms| {
                ms.iter().filter(|m| m["through_router"] == true).count()
            });
            Ok(through == 1)
        },
    )?;
    show(&cutover, &["group", "list", "--link", "demo"])?;
    members.remove(0).stop()?;
    members.push(Member::start(
        &via,
        GROUP,
        ORDERS.0,
        "billing-2 (through the routers)",
        log.clone(),
    )?);
    let group_promoted = Instant::now();
    wait_until("the group-coordinator to promote the group", WAIT, || {
        let gs = cutover.cli_json(&["group", "list", "--link", "demo"])?;
        Ok(gs[0]["state"] == "PROMOTED")
    })?;
    wait_until("the group to form on the target", WAIT, || {
        Ok(members_at(bed.target_bootstrap(), GROUP)? == 2)
    })?;
    println!(
        "group promoted automatically, consuming on the target {:.1} s after the last member moved",
        group_promoted.elapsed().as_secs_f64()
    );
    show(&cutover, &["promotions", "--link", "demo"])?;

    step("promoting both topics in one barrier: the routers hold writes, the primary moves to the target");
    let mut stalls = BTreeMap::new();
    stalls.insert(
        "promote",
        moved(
            &cutover,
            &["promote", "--link", "demo", ORDERS.0, PAYMENTS.0],
        )?,
    );
    show(&cutover, &["status", "--link", "demo"])?;

    step(
        "rolling the topics and the group back to the source (the reverse mirror kept it complete)",
    );
    stalls.insert(
        "rollback",
        moved(
            &cutover,
            &[
                "rollback", "--link", "demo", ORDERS.0, PAYMENTS.0, "--group", GROUP,
            ],
        )?,
    );

    step("promoting again, topics and group together");
    stalls.insert(
        "promote again",
        moved(
            &cutover,
            &[
                "promote", "--link", "demo", ORDERS.0, PAYMENTS.0, "--group", GROUP,
            ],
        )?,
    );

    step("stopping the producers; the group reads to the end");
    totals.add(orders_app)?;
    totals.add(payments_app)?;
    let mut ends = BTreeMap::new();
    for (t, p) in partitions(ORDERS) {
        ends.insert(p, watermarks(bed.target_bootstrap(), &t, p)?.1);
    }
    wait_until("the group to consume every record", WAIT, || {
        let seen: BTreeSet<(i32, i64)> = lock(&log).seen.iter().map(|(p, o, _)| (*p, *o)).collect();
        Ok(ends
            .iter()
            .all(|(p, end)| (0..*end).all(|o| seen.contains(&(*p, o)))))
    })?;
    for m in members {
        m.stop()?;
    }
    let (distinct, redelivered, twice_committed) = {
        let log = lock(&log);
        let mut times: BTreeMap<(i32, i64), usize> = BTreeMap::new();
        for (p, o, _) in &log.seen {
            *times.entry((*p, *o)).or_default() += 1;
        }
        let redelivered: usize = times.values().map(|n| n - 1).sum();
        let twice_committed = times
            .iter()
            .filter(|(k, n)| **n > 1 && !log.uncommitted.contains(k))
            .count();
        (times.len(), redelivered, twice_committed)
    };
    if twice_committed > 0 {
        bail!("{twice_committed} records were consumed twice although committed");
    }

    step("verifying record by record (offset, key, value, headers, timestamp)");
    let mut proved = 0;
    for topic in [ORDERS, PAYMENTS] {
        let t = topic.0;
        wait_until(
            &format!("the reverse mirror to bring {t} up on the source"),
            WAIT,
            || {
                for (t, p) in partitions(topic) {
                    if watermarks(bed.source_bootstrap(), &t, p)?.1
                        != watermarks(bed.target_bootstrap(), &t, p)?.1
                    {
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )?;
        show(&cutover, &["verify", "--link", "demo", "--topic", t])?;
        let v = cutover.cli_json(&["verify", "--link", "demo", "--topic", t])?;
        if v["identical"] != true {
            bail!("verify found a difference in {t}: {v:#}");
        }
        proved += v["partitions"].as_array().map_or(0, |ps| {
            ps.iter()
                .filter_map(|p| p["records_identical"].as_u64())
                .sum::<u64>()
        });
    }

    step("detaching: the source can go, the reverse mirror ends");
    show(&cutover, &["detach", "--link", "demo", "--all"])?;
    show(&cutover, &["mirror", "list", "--link", "demo"])?;

    step("report");
    println!(
        "topics migrated           {} (orders: 6 partitions, payments: 3)",
        2
    );
    println!(
        "records produced          {} acknowledged, {} failed (producers rolled to the routers under load)",
        totals.acked, totals.failed
    );
    for (what, ms) in &stalls {
        println!("produce stall, {what:<13} {ms} ms");
    }
    println!(
        "group {GROUP}              {distinct} records consumed, {redelivered} redelivered (commits lost in a rebalance), none skipped"
    );
    println!("records proved identical  {proved} (same offset, key, value, headers, timestamp)");
    println!(
        "total time                {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("logs                      {}", bed.log_dir().display());
    if totals.failed > 0 {
        bail!("{} writes failed", totals.failed);
    }
    Ok(())
}
