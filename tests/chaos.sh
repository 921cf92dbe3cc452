#!/usr/bin/env bash
# Chaos for longer than the suite's single round (issue 18): the same test binary
# (services/feeder/tests/chaos/), faulting for --minutes, then the recovery comparison
# with and without static membership. Results go to stdout; the run's logs, acked log and
# datasets stay in --keep DIR when given.
#
#   tests/chaos.sh --minutes 30                      # a fresh seed, printed
#   tests/chaos.sh --minutes 5 --seed 42 --keep /tmp/chaos
#   tests/chaos.sh --minutes 10 --rate 400 --max-pause 8 --no-recovery
#   tests/chaos.sh --release --minutes 30            # optimized stages (a long first build)
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

minutes=30
recovery=1
profile=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --seed) export FEEDER_CHAOS_SEED="$2"; shift 2 ;;
        --rate) export FEEDER_CHAOS_RATE="$2"; shift 2 ;;
        --min-pause) export FEEDER_CHAOS_MIN_PAUSE="$2"; shift 2 ;;
        --max-pause) export FEEDER_CHAOS_MAX_PAUSE="$2"; shift 2 ;;
        --strict) export FEEDER_CHAOS_STRICT=true; shift ;;
        --keep) mkdir -p "$2"; FEEDER_CHAOS_DIR="$(cd "$2" && pwd)"; export FEEDER_CHAOS_DIR; shift 2 ;;
        --no-recovery) recovery=0; shift ;;
        --release) profile=(--release); shift ;;
        -h|--help) usage ;;
        *) echo "unknown argument: $1" >&2; usage ;;
    esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/feeder/target}"
FEEDER_PYTHON="${FEEDER_PYTHON:-$(tests/setup-python.sh | tail -n 1)}"
FEEDER_TANSU="${FEEDER_TANSU:-$(tests/install-tansu.sh | tail -n 1)}"
export FEEDER_PYTHON FEEDER_TANSU FEEDER_CHAOS_MINUTES="$minutes"

status=0
echo "== chaos under load for $minutes min"
cargo test "${profile[@]}" -p feeder --test chaos -- chaos_under_load --nocapture || status=$?
if [[ $recovery == 1 ]]; then
    echo "== recovery after kill -9, with and without static membership"
    cargo test "${profile[@]}" -p feeder --test chaos -- --ignored recovery --nocapture || status=$?
fi
exit "$status"
