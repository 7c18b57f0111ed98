#!/usr/bin/env bash
# The benchmark behind `make bench` (which runs `make build` first): builds
# the harness (internal/bench) and runs it. Settings come from BENCH_*
# variables (see docs/benchmarks.md), for example
#   BENCH_SIZE=4G BENCH_SPARSE_SIZE=32G BENCH_RUNS=3 make bench
# Results: the table on stdout, bench-work/results.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

work=${BENCH_WORK:-bench-work}
mkdir -p "$work"

missing=()
for tool in qemu-img qemu-io qemu-nbd nbdcopy; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench: missing ${missing[*]}; installing (qemu-utils, libnbd-bin)" >&2
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -q qemu-utils libnbd-bin >&2 || true
    fi
fi

go build -o "$work/bench" ./internal/bench

# The harness stops everything it starts when it ends or gets SIGINT or
# SIGTERM; pass those on and wait for it, so nothing is left behind.
pid=
stop() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    exit 130
}
trap stop INT TERM
"$work/bench" run &
pid=$!
status=0
wait "$pid" || status=$?
pid=
exit "$status"
