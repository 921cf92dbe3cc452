#!/usr/bin/env bash
# Installs tansu (a Kafka-protocol broker, crates.io `tansu`, SQLite storage through the
# `libsql` feature) into a cache outside the clone, once; prints the binary's path last.
# A cold install takes about 16 minutes on 2 cores, so the binary is kept between runs.
set -euo pipefail
version="${FEEDER_TANSU_VERSION:-0.6.0}"
root="${FEEDER_TANSU_ROOT:-$HOME/.cache/feeder/tansu-$version}"
bin="$root/bin/tansu"
if [[ ! -x "$bin" ]]; then
  echo "installing tansu $version into $root (first run only, ~16 min)" >&2
  cargo install --locked tansu --version "=$version" --features libsql --root "$root" >&2
fi
"$bin" --version >&2 || { echo "tansu at $bin does not run" >&2; exit 1; }
echo "$bin"
