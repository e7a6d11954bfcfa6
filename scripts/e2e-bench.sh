#!/usr/bin/env bash
# End-to-end TCP throughput in one sitting: 3 station sessions of 1115-byte
# frames through `serve` into `sink` (every frame acked end to end: the
# station's gen exits only when all its frames are acked, the sink acks after
# counting them), then the same sessions through a plain TCP relay (socat)
# into the same sink (the sink's ACKs travel back through the relay); both
# throughputs and the ratio. Then latency at about half of serve's full load:
# read-to-forward and read-to-delivered (when a station can be acked).
# Usage: scripts/e2e-bench.sh [FRAMES, default 300000]
# SERVE_EXTRA="--admin 127.0.0.1:0" passes extra options to both serve runs,
# GEN_EXTRA to the gen --connect runs into serve (not the relay run): with
# SERVE_EXTRA="--tls-cert C --tls-key K" GEN_EXTRA="--tls-ca CA" the
# stations connect to serve over TLS.
# MERIDIAN_BIN=PATH uses that binary instead of building the release one
# (the test suite runs it that way with a few thousand frames). Needs
# python3; installs socat if missing; removes its temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
frames=${1:-300000}
if ! command -v socat >/dev/null; then
    apt-get update -qq && apt-get install -y -qq socat
fi
if [ -n "${MERIDIAN_BIN:-}" ]; then
    bin=$MERIDIAN_BIN
else
    cargo build --release --quiet
    bin=target/release/meridian-pipeline
fi
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_listen() { for _ in $(seq 200); do grep -q "listening on" "$1" 2>/dev/null && return; sleep 0.05; done; echo "no listener: $1" >&2; exit 1; }
gen=(--stations 3 --frames "$frames" --payload 1115 --seed 7)
bytes=$("$bin" gen --out - "${gen[@]}" 2>/dev/null | wc -c)

# 1. serve
sp=$(port); mp=$(port)
"$bin" sink --listen 127.0.0.1:$sp --connections 1 --json 2>"$tmp/sink1.err" & sink=$!
wait_listen "$tmp/sink1.err"
"$bin" serve --listen 127.0.0.1:$mp --forward 127.0.0.1:$sp --batch-size 1000 --json ${SERVE_EXTRA:-} 2>"$tmp/serve.err" & serve=$!
wait_listen "$tmp/serve.err"
t0=$(date +%s.%N)
"$bin" gen --connect 127.0.0.1:$mp "${gen[@]}" ${GEN_EXTRA:-} 2>/dev/null
kill -TERM $serve; wait $serve; wait $sink
t1=$(date +%s.%N)
serve_s=$(python3 -c "print($t1 - $t0)")

# 2. socat relay, one relayed connection per station
sp=$(port); rp=$(port)
"$bin" sink --listen 127.0.0.1:$sp --connections 3 --json 2>"$tmp/sink2.err" & sink=$!
wait_listen "$tmp/sink2.err"
socat TCP-LISTEN:$rp,fork,reuseaddr,bind=127.0.0.1 TCP:127.0.0.1:$sp & relay=$!
sleep 0.3
t0=$(date +%s.%N)
"$bin" gen --connect 127.0.0.1:$rp "${gen[@]}" 2>/dev/null
wait $sink
t1=$(date +%s.%N)
kill $relay 2>/dev/null || true
relay_s=$(python3 -c "print($t1 - $t0)")

python3 - "$bytes" "$serve_s" "$relay_s" "$tmp/serve.err" "$tmp/sink1.err" "$tmp/sink2.err" <<'PY'
import json, sys
b, s, r = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
serve = json.loads(open(sys.argv[4]).read().strip().splitlines()[-1])
k1 = json.loads(open(sys.argv[5]).read().strip().splitlines()[-1])
k2 = json.loads(open(sys.argv[6]).read().strip().splitlines()[-1])
print(f"input: {b/1e6:.1f} MB, {serve['frames_decoded']} frames from 3 stations, 1115-byte payloads")
print(f"serve -> sink: {b/s/1e6:8.1f} MB/s of station input ({s:.2f} s), forwarded {serve['forwarded']} frames, sink saw {k1['frames']}")
print(f"socat -> sink: {b/r/1e6:8.1f} MB/s ({r:.2f} s), sink saw {k2['frames']}")
print(f"serve / relay: {r/s:.2f}")
print(f"latency at full load: p50 {serve['latency_us']['p50']} us, p99 {serve['latency_us']['p99']} us, p99.9 {serve['latency_us']['p999']} us")
a = serve['ack_latency_us']
print(f"read-to-delivered at full load: p50 {a['p50']} us, p99 {a['p99']} us, p99.9 {a['p999']} us")
PY

# 3. latency at about half of full load: pace each station at half the measured rate.
rate=$(python3 -c "print(max(1, int($frames / 3 / $serve_s / 2)))")
sp=$(port); mp=$(port)
"$bin" sink --listen 127.0.0.1:$sp --connections 1 --json 2>"$tmp/sink3.err" & sink=$!
wait_listen "$tmp/sink3.err"
"$bin" serve --listen 127.0.0.1:$mp --forward 127.0.0.1:$sp --json ${SERVE_EXTRA:-} 2>"$tmp/serve3.err" & serve=$!
wait_listen "$tmp/serve3.err"
"$bin" gen --connect 127.0.0.1:$mp --stations 3 --frames $((rate * 3 * 5)) --payload 1115 --seed 8 --rate "$rate" ${GEN_EXTRA:-} 2>/dev/null
kill -TERM $serve; wait $serve; wait $sink
python3 - "$tmp/serve3.err" "$rate" <<'PY'
import json, sys
s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(f"latency at half load ({sys.argv[2]} frames/s per station, --max-delay-ms 5): p50 {s['latency_us']['p50']} us, p99 {s['latency_us']['p99']} us, p99.9 {s['latency_us']['p999']} us")
a = s['ack_latency_us']
print(f"read-to-delivered (station ACK) at half load: p50 {a['p50']} us, p99 {a['p99']} us, p99.9 {a['p999']} us, acked {s['acked_bytes']} bytes")
PY
exit 0
