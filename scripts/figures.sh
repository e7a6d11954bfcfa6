#!/usr/bin/env bash
# The throughput runner's figures in one sitting, as ratios: soa vs aos vs
# baseline at batch 1000, --threads 2 vs 1 at batch 1000 and 65536, decode
# of 1115-byte payloads, and `process` on a file of the default workload
# against the baseline layout. Usage: scripts/figures.sh [SECS per run, default 5]
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
run --threads 2
# process: a 1M-frame capture file to a file, wall time of the best of 3.
dir=$(mktemp -d)
"$bin" gen --out "$dir/cap.bin" --frames 1000000 2>/dev/null
best=""
for _ in 1 2 3; do
    t0=$(date +%s.%N)
    "$bin" process --in "$dir/cap.bin" --out "$dir/out.bin" --json 2>"$dir/summary.json"
    t1=$(date +%s.%N)
    best=$(python3 -c "print(min(x for x in [$t1 - $t0, ${best:-1e9}]))")
done
echo "{\"process_s\": $best, \"frames\": 1000000, \"summary\": $(tail -1 "$dir/summary.json")}" >>"$out"
rm -rf "$dir"
python3 - "$out" <<'PY'
import json, sys
rs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
soa, aos, base, t1, t2, big, soa2, proc = rs
def line(r, note=""):
    s = r["stages"]
    print(f'{r["layout"]:<9}{r["batch_size"]:>7}{r["threads"]:>4}{r["frames_per_s"]/1e6:>10.2f}'
          + "".join(f'{s[k]["ns_per_frame"]:>10.2f}' for k in ("decode", "validate", "dedup", "forward"))
          + f'  {note}')
print(f'{"layout":<9}{"batch":>7}{"thr":>4}{"Mframe/s":>10}{"decode":>10}{"validate":>10}{"dedup":>10}{"forward":>10}  (ns/frame)')
for r, note in [(soa, ""), (aos, ""), (base, ""), (soa2, ""), (t1, ""), (t2, ""), (big, "payload 1115")]:
    line(r, note)
after = lambda r: sum(r["stages"][k]["ns_per_frame"] for k in ("validate", "dedup", "forward"))
print()
print(f'soa / baseline at batch 1000:           {soa["frames_per_s"]/base["frames_per_s"]:.2f}x')
print(f'soa / aos at batch 1000:                {soa["frames_per_s"]/aos["frames_per_s"]:.2f}x')
print(f'--threads 2 / --threads 1 at 1000:      {soa2["frames_per_s"]/soa["frames_per_s"]:.2f}x')
print(f'--threads 2 / --threads 1 at 65536:     {t2["frames_per_s"]/t1["frames_per_s"]:.2f}x')
pfs = proc["frames"] / proc["process_s"]
print(f'process, 1M-frame file to file:         {pfs/1e6:.2f} M frames/s ({proc["process_s"]:.3f} s, best of 3)')
print(f'process / baseline layout (run):        {pfs/base["frames_per_s"]:.2f}x')
print(f'soa validate+dedup+forward:             {1e3/after(soa):.1f} M frames/s')
print(f'decode, 1115-byte payloads:             {big["wire_bytes"]/big["frames"]/big["stages"]["decode"]["ns_per_frame"]:.2f} GB/s')
allocs = max(r["stages"][k]["allocs_per_batch"] for r in (soa, soa2, t1, t2) for k in r["stages"])
print(f'soa allocations per batch, any stage:   {allocs:g}')
PY
rm -f "$out"
