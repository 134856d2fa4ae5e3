# Cutover developer commands. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Run every test (unit, crate integration, end to end with real etcd, real Apache Kafka, mock clusters for fault injection, and our binaries).
test: build kafka-jars
    cargo test --workspace --exclude cutover-integration-tests
    # End-to-end tests start etcd, two mock clusters and several service processes each: two at a time on 2 cores.
    cargo test -p cutover-integration-tests -- --test-threads=2

# Resolve the pinned Apache Kafka versions from Maven Central into target/kafka/ (once; needs java and mvn).
kafka-jars:
    bash integration-tests/kafka/fetch.sh

# Build every binary the end-to-end tests and the demo start.
build:
    cargo build --workspace --bins

# A live migration end to end on local real Apache Kafka clusters, with a report.
demo: build kafka-jars
    cargo run -q -p cutover-integration-tests --bin cutover-demo

# Formatting and lints, as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    # Fuzz targets live outside the workspace; keep them compiling.
    cargo check --manifest-path fuzz/Cargo.toml --bins

# Check that vendor/kafka-protocol is the published crate plus vendor/kafka-protocol.patch.
vendor-check:
    bash vendor/check.sh

# The decoders of network input under libFuzzer for a fixed number of inputs each, on stable Rust (cargo-fuzz's coverage flags, no sanitizer), with allocations capped at 512 MB: a crash, a panic or an unbounded allocation fails.
fuzz-ci runs="3000000":
    RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing" \
        cargo build --manifest-path fuzz/Cargo.toml --release --target x86_64-unknown-linux-gnu --bin router_frames --bin kafka_response
    for t in router_frames kafka_response; do \
        corpus="$(mktemp -d)"; \
        fuzz/target/x86_64-unknown-linux-gnu/release/$t -runs={{runs}} -malloc_limit_mb=512 -rss_limit_mb=1024 -print_final_stats=1 "$corpus" 2>&1 | grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|==)' ; \
        rc=${PIPESTATUS[0]}; rm -rf "$corpus"; [ "$rc" -eq 0 ] || { echo "fuzz target $t failed (exit $rc)"; exit 1; }; \
    done

# What CI runs.
ci: lint vendor-check test fuzz-ci

# Fetcher versus MirrorMaker 2 (and its exactly-once mode) on real Apache Kafka: CPU per byte and throughput, 1 GB per scenario.
bench-fetcher *args: kafka-jars
    cargo build --release --workspace --bins
    cargo run --release -q -p cutover-integration-tests --bin cutover-bench-vs-mm2 -- {{args}}

# Fetcher versus a librdkafka consume-then-produce copy on the mock clusters (no broker work in the figures).
bench-fetcher-mock *args:
    cargo build --release --workspace --bins
    cargo run --release -q -p cutover-integration-tests --bin cutover-bench-fetcher -- {{args}}

# Copy rate of a mirror under a link bandwidth limit (fails if the limit does not hold).
bench-bandwidth:
    cargo build --release --workspace --bins
    cargo run --release -q -p cutover-integration-tests --bin cutover-bench-bandwidth

# 5,000 partitions over three fetchers on real Kafka: idle CPU, source-to-target delay, takeover after kill -9.
bench-scale *args: kafka-jars
    cargo build --release --workspace --bins
    cargo run --release -q -p cutover-integration-tests --bin cutover-bench-scale -- {{args}}

# Produce (acks=all) and fetch through one router versus directly to the source on real Kafka: added latency, throughput, router CPU per MB.
bench-router *args: kafka-jars
    cargo build --release --workspace --bins
    cargo run --release -q -p cutover-integration-tests --bin cutover-bench-router -- {{args}}

# Produce stall of topic promotions under load through two routers on real Kafka (p50/p99/max), failed and duplicated writes.
bench-promotion *args: kafka-jars
    cargo build --release --workspace --bins
    cargo run --release -q -p cutover-integration-tests --bin cutover-bench-promotion -- {{args}}

# All benchmarks.
bench: bench-fetcher bench-fetcher-mock bench-bandwidth bench-scale bench-router bench-promotion

# Fuzz the record batch decoder and the transformation (needs nightly and cargo-fuzz).
fuzz target="batches" seconds="60":
    cd fuzz && cargo +nightly fuzz run {{target}} -- -max_total_time={{seconds}}

# Start etcd and two Kafka clusters (real by default, --kafka mock) and keep them up (for running services by hand).
testbed *args: kafka-jars
    cargo run -q -p cutover-integration-tests --bin cutover-testbed -- {{args}}
