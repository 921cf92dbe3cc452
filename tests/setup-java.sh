#!/usr/bin/env bash
# Make sure a JDK (java, javac, jar; 17 or newer) is on PATH for the Spark interop check
# (tests/python/check_spark.py runs pyspark, and compiles a parquet-mr KmsClient for the
# encrypted datasets). Installs Debian's openjdk-17-jdk-headless when one is missing.
set -euo pipefail
log() { printf 'setup-java: %s\n' "$*" >&2; }

if command -v java >/dev/null && command -v javac >/dev/null && command -v jar >/dev/null; then
    log "$(java -version 2>&1 | head -n 1)"
    exit 0
fi
log "no JDK on PATH: installing openjdk-17-jdk-headless"
sudo=""
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { log "error: not root and no sudo; install a JDK 17+"; exit 1; }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends openjdk-17-jdk-headless >&2
command -v javac >/dev/null || { log "error: javac still missing after the install"; exit 1; }
log "$(java -version 2>&1 | head -n 1)"
