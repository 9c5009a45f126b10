#!/usr/bin/env bash
# benches/profile.sh storm|ingest — where the frontend's CPU goes (tuning.md, P3 and P6).
#
#   storm:  one shard on cpu 0, 3,000 loadgen agents on cpu 1, then a full-handshake
#           reconnect storm (SIGUSR2) profiled for 6 s;
#   ingest: two shards, 1,000 agents each uploading 8 MiB (upload scenario), profiled for
#           10 s once uploads flow.
# `perf record -F 999 -g -p <frontend>`; prints the flat profile grouped by what the code
# does (benches/perf_classify.py) and leaves perf.data, flat.txt and children.txt in OUT.
# Environment: BIN_DIR (default target/release), OUT (default /tmp/packhunt-profile-<kind>).
# Loopback only; stops everything it starts.
set -u
[[ ${1:-} == storm || ${1:-} == ingest ]] || { echo "usage: $0 storm|ingest" >&2; exit 2; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=${BIN_DIR:-$ROOT/target/release}; W=${OUT:-/tmp/packhunt-profile-$1}
command -v perf >/dev/null || { echo "profile.sh: needs perf" >&2; exit 1; }
rm -rf "$W"; mkdir -p "$W"; cd "$W" || exit 1
FP=$((20000 + RANDOM % 12000)); GP=$((FP+1))
$B/packhunt config generate --out dep --admin-password pw --frontend-port $FP --gui-port $GP >/dev/null
sed -i 's/^bind_address = "0.0.0.0"/bind_address = "127.0.0.1"/' dep/server.config.toml
# Unshed, as targets.sh does: the default 200 connections/s would turn the storm into refusals.
sed -i 's/^max_connections_per_second = .*/max_connections_per_second = 1000000/' dep/server.config.toml
[[ $1 == storm ]] && sed -i 's/^shards = .*/shards = 1/' dep/server.config.toml
PIN=; [[ $1 == storm ]] && PIN="taskset -c 0"
$PIN $B/packhunt frontend --config dep/server.config.toml > fe.out 2>&1 &
FE=$!; sleep 2
if [[ $1 == storm ]]; then
  taskset -c 1 timeout -s INT 120 $B/loadgen --config dep/client.config.toml --clients 3000 --duration-s 40 --ramp-per-second 1000 --source-ips 16 > /dev/null 2> lg.err &
  sleep 15; LG=$(pgrep -x loadgen | head -1)
  perf record -F 999 -g -p $FE -o perf.data -- sleep 6 > /dev/null 2>&1 &
  sleep 0.3; kill -USR2 $LG; wait %2 2>/dev/null; sleep 6
else
  LOADGEN_API_PASSWORD=pw taskset -c 1 timeout -s INT 200 $B/loadgen --config dep/client.config.toml --clients 1000 --duration-s 150 --scenario upload --upload-bytes-per-agent 8388608 --exit-after-flows 1000 --api-url https://127.0.0.1:$GP/ --probe-rate-per-second 0 > /dev/null 2> lg.err &
  for i in $(seq 100); do grep -q "tasks [1-9]" lg.err && break; sleep 0.5; done
  sleep 3
  perf record -F 999 -g -p $FE -o perf.data -- sleep 10 > /dev/null 2>&1
fi
tail -2 lg.err
pkill -INT -x loadgen; sleep 2; kill $FE; wait $FE 2>/dev/null
perf report -i perf.data --no-children --sort sym --stdio -g none 2>/dev/null | grep "%" > flat.txt
perf report -i perf.data --children --sort sym --stdio -g none 2>/dev/null | grep "%" > children.txt
python3 "$ROOT/benches/perf_classify.py" flat.txt
