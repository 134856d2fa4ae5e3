#!/usr/bin/env bash
# Resolves the pinned Kafka versions (versions.env) from Maven Central into
# target/kafka/<version>/ (one folder of jars per version), once: a folder
# with a .complete marker is reused. Prints nothing when everything is there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
out="${CUTOVER_KAFKA_HOME:-$root/target/kafka}"

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "error: '$1' not found. Real Kafka brokers for the tests need $2." >&2
        echo "       On Debian/Ubuntu: apt-get install $3" >&2
        exit 1
    fi
}
need java "a Java 17+ runtime" "openjdk-17-jre-headless"
need mvn "Maven to resolve the broker jars from Maven Central" "maven"

resolve() {
    local version="$1"
    shift
    local dir="$out/$version"
    [[ -f "$dir/.complete" ]] && return 0
    echo "resolving Apache Kafka $version into $dir" >&2
    rm -rf "$dir.partial"
    mvn -q -B -f "$here/pom.xml" -Dkafka.version="$version" "$@" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dir.partial" >&2
    touch "$dir.partial/.complete"
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
}

# The tether that stops a broker when its test ends (see tether/Tether.java).
tether="$out/tether"
if [[ ! -f "$tether/Tether.class" || "$here/tether/Tether.java" -nt "$tether/Tether.class" ]]; then
    need javac "a Java 17+ compiler" "openjdk-17-jdk-headless"
    mkdir -p "$tether"
    javac -d "$tether" "$here/tether/Tether.java"
fi

resolve "$TARGET_KAFKA_VERSION"
# Kafka 3.x brings its own logging binding (reload4j); see the pom.
resolve "$SOURCE_KAFKA_VERSION" -Dlegacy.logging
