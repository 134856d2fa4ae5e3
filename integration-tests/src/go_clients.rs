//! A Go client family beside librdkafka and Java: franz-go, built from
//! `integration-tests/go/franz` (modules from the Go module proxy, pinned
//! in its go.sum) with the machine's Go toolchain.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::client_lines::{parse_events, ClientRecord};

fn build() -> Result<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("go/franz");
    let out = crate::process::profile_dir()?
        .join("go")
        .join("franz-client");
    let status = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&out)
        .arg(".")
        .current_dir(&src)
        .status()
        .context("running `go build` (the Go toolchain, 1.26 or newer, must be installed)")?;
    if !status.success() {
        bail!("go build of {} failed ({status})", src.display());
    }
    Ok(out)
}

/// franz-go through `bootstrap`: produces `n` records to `topic`
/// (idempotent, acks=all), then consumes them in `group` and commits.
/// Returns (acknowledged, consumed).
pub fn franz_produce_then_consume(
    bootstrap: &str,
    topic: &str,
    n: usize,
    group: &str,
    log_dir: &Path,
) -> Result<(Vec<ClientRecord>, Vec<ClientRecord>)> {
    let bin = build()?;
    let output = Command::new(&bin)
        .args(["-bootstrap", bootstrap, "-topic", topic, "-group", group])
        .arg("-n")
        .arg(n.to_string())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let log = log_dir.join(format!("franz-{topic}.log"));
    std::fs::write(&log, [&output.stdout[..], &output.stderr[..]].concat())
        .with_context(|| format!("writing {}", log.display()))?;
    if !output.status.success() {
        bail!(
            "the franz-go client exited ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(parse_events(&output.stdout))
}
