#!/usr/bin/env bash
# Regenerates every measurement audit.md quotes, into target/audit/:
#   machine.txt        the machine, toolchain and build flags
#   criterion.txt      `cargo bench --bench pipeline` (all groups)
#   fix-N.txt          each fix's criterion before/after, from git worktrees at
#                      the commits around the fix, running today's benches/pipeline.rs
#   allocs.jsonl       `run --json` for baseline and soa (allocations per stage per batch)
#   perf-*.txt         per-symbol shares of the 30-second profiles
#   flamegraph-baseline.svg, and ./flamegraph.svg (the final pipeline)
# Installs only what the part asked for needs (perf from linux-perf and
# flamegraph from crates.io, for the profiles of `all` and `profiles`), says
# what it could not do, and says that it overwrites the tracked
# ./flamegraph.svg. Needs python3 (criterion parsing) and git (worktrees).
# Usage: scripts/audit.sh [all|fixes|profiles]
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/target/audit
mkdir -p "$out"
export CARGO_TARGET_DIR=$root/target # shared, so criterion finds saved baselines
export CARGO_TERM_COLOR=never
say() { printf '\n== %s\n' "$*"; }
missing=()

if [ "${1:-all}" != fixes ]; then
    say "tools (for the profiles)"
    if ! command -v perf >/dev/null; then
        (apt-get update -qq && apt-get install -y -qq linux-perf) || missing+=("perf (apt-get install linux-perf failed)")
    fi
    if ! command -v flamegraph >/dev/null; then
        cargo install flamegraph || missing+=("flamegraph (cargo install failed)")
    fi
    echo "note: this overwrites the tracked ./flamegraph.svg (git diff shows it; git checkout flamegraph.svg undoes it)"
fi

if [ "${1:-all}" = all ]; then
say "machine"
{
    echo "commit: $(git rev-parse HEAD)"
    lscpu | grep -E '^(Model name|CPU\(s\)|Thread\(s\) per core|Core\(s\) per socket|L1d|L2|L3)'
    echo "avx2: $(grep -c -m1 avx2 /proc/cpuinfo)  avx512f: $(grep -c -m1 avx512f /proc/cpuinfo)"
    free -h | head -2
    uname -srm
    rustc -V
    cargo -V
    echo "rustflags: $(grep rustflags .cargo/config.toml)"
    echo "profiles: release (opt-level 3, debug off); bench and profiling inherit release with debug = true"
} | tee "$out/machine.txt"

cargo build --release --quiet
bin=$root/target/release/meridian-pipeline

say "allocations per stage per batch of 1000 (counting allocator)"
for layout in baseline soa; do
    "$bin" run --layout "$layout" --duration 5 --json --quiet
done | tee "$out/allocs.jsonl"
fi

what=${1:-all}
if [ "$what" = all ]; then
    say "criterion: every group"
    cargo bench --bench pipeline 2>&1 | tee "$out/criterion.txt"
fi

if [ "$what" = all ] || [ "$what" = fixes ]; then
    # fix NAME BEFORE AFTER FILTER: today's benches/pipeline.rs in worktrees at
    # BEFORE (saved as a baseline) and AFTER (compared against it).
    fix() {
        local name=$1 before=$2 after=$3 filter=$4
        say "$name: $before -> $after ($filter)"
        for side in before after; do
            local commit=$before
            [ "$side" = after ] && commit=$after
            local wt=$out/wt-$side
            git worktree remove --force "$wt" 2>/dev/null
            git worktree add --detach --force "$wt" "$commit" >/dev/null
            mkdir -p "$wt/benches"
            cp benches/pipeline.rs "$wt/benches/pipeline.rs"
            grep -q 'name = "pipeline"' "$wt/Cargo.toml" ||
                printf '\n[[bench]]\nname = "pipeline"\nharness = false\n' >>"$wt/Cargo.toml"
            if [ "$side" = before ]; then
                (cd "$wt" && cargo bench --bench pipeline -- --save-baseline "$name-before" "$filter" 2>&1)
            else
                (cd "$wt" && cargo bench --bench pipeline -- --baseline "$name-before" "$filter" 2>&1)
            fi | tee "$out/$name-$side.txt"
            git worktree remove --force "$wt"
        done
    }
    fix fix-1 23db48e c407975 '^(stage/dedup/sort-unique|pipeline/soa/1000)$'
    fix fix-2 c407975 5eb6ce3 '^(stage/dedup/sort-unique\+window|pipeline/soa/1000)$'
fi

if [ "$what" = fixes ]; then
    :
elif command -v perf >/dev/null && command -v flamegraph >/dev/null; then
    say "30-second profiles (perf at 199 Hz, DWARF call graphs)"
    cargo build --profile profiling --quiet
    prof=$root/target/profiling/meridian-pipeline
    for layout in baseline soa; do
        svg=$out/flamegraph-$layout.svg
        [ "$layout" = soa ] && svg=$root/flamegraph.svg
        flamegraph --freq 199 --output "$svg" -- "$prof" run --layout "$layout" --duration 30 --quiet >/dev/null
        perf report -i perf.data --no-children --sort symbol --stdio --percent-limit 0.5 -g none 2>/dev/null |
            grep -v '^#' | grep -v '^$' >"$out/perf-$layout-self.txt"
        perf report -i perf.data --children --sort symbol --stdio --percent-limit 0.5 -g none 2>/dev/null |
            grep -v '^#' | grep -v '^$' >"$out/perf-$layout-children.txt"
        rm -f perf.data perf.data.old
        echo "$layout: $svg"
        head -12 "$out/perf-$layout-self.txt"
    done
else
    missing+=("flamegraphs (perf or flamegraph missing)")
fi

say "done: outputs in $out"
if [ ${#missing[@]} -gt 0 ]; then
    printf 'could not do: %s\n' "${missing[@]}"
    exit 1
fi
