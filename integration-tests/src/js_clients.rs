//! A JavaScript client family beside librdkafka, Java and Go: kafkajs,
//! installed by npm (pinned in `integration-tests/js/kafkajs`'s
//! package-lock.json) into the build directory and run with the machine's
//! Node.js.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::client_lines::{parse_events, ClientRecord};

/// The client's directory under the build directory, with its packages.
fn install() -> Result<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("js/kafkajs");
    let dir = crate::process::profile_dir()?.join("js").join("kafkajs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock = std::fs::read(src.join("package-lock.json")).context("reading package-lock.json")?;
    let installed = std::fs::read(dir.join("package-lock.json")).ok();
    for f in ["package.json", "package-lock.json", "client.js"] {
        std::fs::copy(src.join(f), dir.join(f)).with_context(|| format!("copying {f}"))?;
    }
    if installed.as_deref() != Some(&lock[..]) || !dir.join("node_modules/kafkajs").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .context("running `npm ci` (Node.js and npm must be installed)")?;
        if !status.success() {
            bail!("npm ci in {} failed ({status})", dir.display());
        }
    }
    Ok(dir)
}

/// kafkajs through `bootstrap`: produces `n` records to `topic` (record i
/// to partition i % `partitions`; idempotent, acks=all), then consumes them
/// in `group`, committing each. Returns (acknowledged, consumed).
pub fn kafkajs_produce_then_consume(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    n: usize,
    group: &str,
    log_dir: &Path,
) -> Result<(Vec<ClientRecord>, Vec<ClientRecord>)> {
    let dir = install()?;
    let output = Command::new("node")
        .arg("client.js")
        .args(["--bootstrap", bootstrap, "--topic", topic, "--group", group])
        .args([
            "--partitions",
            &partitions.to_string(),
            "--n",
            &n.to_string(),
        ])
        .current_dir(&dir)
        .output()
        .context("running node")?;
    let log = log_dir.join(format!("kafkajs-{topic}.log"));
    std::fs::write(&log, [&output.stdout[..], &output.stderr[..]].concat())
        .with_context(|| format!("writing {}", log.display()))?;
    if !output.status.success() {
        bail!(
            "the kafkajs client exited ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(parse_events(&output.stdout))
}
