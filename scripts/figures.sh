#!/usr/bin/env bash
# The throughput runner's figures in one sitting, as ratios: soa vs aos vs
# baseline at batch 1000, --threads 2 vs 1 at batch 65536, decode of
# 1115-byte payloads. Usage: scripts/figures.sh [SECS per run, default 5]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
cargo build --release --quiet
bin=target/release/meridian-pipeline
out=$(mktemp)
run() { "$bin" run --duration "$secs" --json --quiet "$@" >>"$out"; }
run --layout soa
run --layout aos
run --layout baseline
run --batch-size 65536 --threads 1
run --batch-size 65536 --threads 2
run --payload 1115
python3 - "$out" <<'PY'
import json, sys
rs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
soa, aos, base, t1, t2, big = rs
def line(r, note=""):
    s = r["stages"]
    print(f'{r["layout"]:<9}{r["batch_size"]:>7}{r["threads"]:>4}{r["frames_per_s"]/1e6:>10.2f}'
          + "".join(f'{s[k]["ns_per_frame"]:>10.2f}' for k in ("decode", "validate", "dedup", "forward"))
          + f'  {note}')
print(f'{"layout":<9}{"batch":>7}{"thr":>4}{"Mframe/s":>10}{"decode":>10}{"validate":>10}{"dedup":>10}{"forward":>10}  (ns/frame)')
for r, note in [(soa, ""), (aos, ""), (base, ""), (t1, ""), (t2, ""), (big, "payload 1115")]:
    line(r, note)
after = lambda r: sum(r["stages"][k]["ns_per_frame"] for k in ("validate", "dedup", "forward"))
print()
print(f'soa / baseline at batch 1000:           {soa["frames_per_s"]/base["frames_per_s"]:.2f}x')
print(f'soa / aos at batch 1000:                {soa["frames_per_s"]/aos["frames_per_s"]:.2f}x')
print(f'--threads 2 / --threads 1 at 65536:     {t2["frames_per_s"]/t1["frames_per_s"]:.2f}x')
print(f'soa validate+dedup+forward:             {1e3/after(soa):.1f} M frames/s')
print(f'decode, 1115-byte payloads:             {big["wire_bytes"]/big["frames"]/big["stages"]["decode"]["ns_per_frame"]:.2f} GB/s')
allocs = max(r["stages"][k]["allocs_per_batch"] for r in (soa, t1, t2) for k in r["stages"])
print(f'soa allocations per batch, any stage:   {allocs:g}')
PY
rm -f "$out"
