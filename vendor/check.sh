#!/usr/bin/env bash
# The vendored kafka-protocol is the published crate plus kafka-protocol.patch, nothing else.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version=0.18.0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
curl -sSfL "https://static.crates.io/crates/kafka-protocol/kafka-protocol-$version.crate" -o "$work/crate.tar.gz"
tar -xzf "$work/crate.tar.gz" -C "$work"
(cd "$work/kafka-protocol-$version" && patch -s -p1 < "$here/kafka-protocol.patch")
if ! diff -r "$work/kafka-protocol-$version" "$here/kafka-protocol" >"$work/diff"; then
    echo "vendor/kafka-protocol differs from kafka-protocol $version + vendor/kafka-protocol.patch:" >&2
    cat "$work/diff" >&2
    exit 1
fi
echo "vendor/kafka-protocol is kafka-protocol $version + vendor/kafka-protocol.patch"
