#!/usr/bin/env bash
# The status page (`serve --admin`, GET /) in a real browser: starts `sink`,
# `serve --admin` and `gen --connect` with two named stations (gs-0, gs-1)
# on ephemeral 127.0.0.1 ports and one whose name is an <img> tag (it must
# show as text), waits until they have finished, then starts
# a paced third station (live-0) and one idle plain connection so the page
# shows all three states, and loads the page with headless Chromium:
# `--dump-dom` must show gs-0 and gs-1 with the frame counts serve's JSON
# summary reports for them at exit, and the gap of a plain stream that
# leaves out sat 4001's seqs 7..9 (in its gap table and in /api/gaps);
# `--screenshot` saves the page.
#
# OVERWRITES docs/status.png (the README's screenshot) unless
# UI_SCREENSHOT=PATH says where to write it instead (the test suite does).
# MERIDIAN_BIN=PATH uses that binary instead of building the debug one.
# Installs Debian's chromium if missing (apt-get; needs root), needs
# python3; kills what it started (by PID) and removes its temporary
# directory. Exit 0 on success, else 1 with a one-line reason on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "ui-check: $*" >&2; exit 1; }

shot=${UI_SCREENSHOT:-docs/status.png}
mkdir -p "$(dirname "$shot")"
shot=$(cd "$(dirname "$shot")" && pwd)/$(basename "$shot")

if ! command -v chromium >/dev/null; then
    { apt-get update -qq && apt-get install -y -qq chromium; } >/dev/null 2>&1 ||
        fail "chromium is missing and 'apt-get install chromium' failed (not root, or no network?)"
    command -v chromium >/dev/null || fail "chromium is still missing after apt-get install"
fi
command -v python3 >/dev/null || fail "python3 is missing"

if [ -n "${MERIDIAN_BIN:-}" ]; then
    bin=$MERIDIAN_BIN
else
    cargo build --quiet || fail "cargo build failed"
    bin=target/debug/meridian-pipeline
fi
[ -x "$bin" ] || fail "no binary at $bin"

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# The text after MARKER on a line of FILE, waiting (bounded) for it.
after() {
    local file=$1 marker=$2 line
    for _ in $(seq 200); do
        line=$(grep -m1 -F "$marker" "$file" 2>/dev/null || true)
        if [ -n "$line" ]; then echo "${line#*"$marker"}"; return; fi
        sleep 0.05
    done
    fail "no '$marker' line in $(basename "$file"): $(tail -n1 "$file" 2>/dev/null)"
}

"$bin" sink --listen 127.0.0.1:0 --connections 1 --json >/dev/null 2>"$tmp/sink.err" &
sink=$!; pids+=("$sink")
sink_addr=$(after "$tmp/sink.err" "listening on ")

"$bin" serve --listen 127.0.0.1:0 --forward "$sink_addr" --admin 127.0.0.1:0 --json \
    >/dev/null 2>"$tmp/serve.err" &
serve=$!; pids+=("$serve")
listen=$(after "$tmp/serve.err" "listening on ")
admin=$(after "$tmp/serve.err" "admin on ")

# The checked stations: they run to the end (every frame acked). Every
# station here sends seed 13: the same satellites over the same seqs, so
# the only lasting gap is the deliberate one below.
timeout 60 "$bin" gen --connect "$listen" --stations 2 --frames 6000 --seed 13 \
    --station-name gs- >/dev/null 2>"$tmp/gen.err" ||
    fail "gen --connect (gs-) failed: $(tail -n1 "$tmp/gen.err")"

# A station whose name is markup: the page must show it as text.
hostile='<img src=x alt=evil>-'
timeout 60 "$bin" gen --connect "$listen" --stations 1 --frames 200 --seed 13 \
    --station-name "$hostile" >/dev/null 2>"$tmp/gen2.err" ||
    fail "gen --connect (hostile name) failed: $(tail -n1 "$tmp/gen2.err")"

# A plain stream with a deliberate gap: sat 4001, seqs 0..19 without 7..9.
python3 - "$listen" <<'PY' || fail "sending the stream with a gap failed"
import socket, struct, sys, zlib
host, port = sys.argv[1].rsplit(":", 1)
buf = b""
for seq in [s for s in range(20) if not 7 <= s <= 9]:
    payload = b"gap check"
    body = struct.pack("<IQBBH", 4001, seq, 0, 1, len(payload)) + payload
    buf += b"\x1a\xcf\xfc\x1d" + body + struct.pack("<I", zlib.crc32(body))
s = socket.create_connection((host, int(port)), timeout=10)
s.sendall(buf)
s.shutdown(socket.SHUT_WR)
try:
    while s.recv(4096):
        pass
except OSError:
    pass
PY
gap_seen() {
    curl -sf "http://$admin/api/gaps" | python3 -c '
import json, sys
sats = {s["sat"]: s for s in json.load(sys.stdin)["satellites"]}
g = sats.get(4001)
sys.exit(0 if g and g["ranges"] == [[7, 9]] and g["missing"] == 3 else 1)'
}
for _ in $(seq 200); do gap_seen && break; sleep 0.05; done
gap_seen || fail "/api/gaps does not show sat 4001 missing exactly 7..9"

# Until serve has seen both stations disconnect (bounded).
links_done() {
    curl -sf "http://$admin/api/links" | python3 -c '
import json, sys
links = {l["station"]: l for l in json.load(sys.stdin)}
sys.exit(0 if all(n in links and not links[n]["connected"] for n in ("gs-0", "gs-1")) else 1)'
}
for _ in $(seq 200); do links_done && break; sleep 0.05; done
links_done || fail "gs-0 and gs-1 still connected (or missing) in /api/links"

# For the picture: a paced station still sending, and a plain connection
# that sends nothing (connected, no frame yet: stale).
"$bin" gen --connect "$listen" --stations 1 --frames 20000 --seed 13 --rate 400 \
    --station-name live- >/dev/null 2>"$tmp/live.err" &
live=$!; pids+=("$live")
python3 -c '
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)))
time.sleep(120)' "$listen" &
idle=$!; pids+=("$idle")
# Until serve has both: live-0 with frames, and a connected plain stream.
extra_up() {
    curl -sf "http://$admin/api/links" | python3 -c '
import json, sys
links = json.load(sys.stdin)
live = any(l["station"] == "live-0" and l["connected"] and l["frames"] > 0 for l in links)
plain = any(l["station"] == l["peer"] and l["connected"] for l in links)
sys.exit(0 if live and plain else 1)'
}
for _ in $(seq 200); do extra_up && break; sleep 0.05; done
extra_up || fail "live-0 or the idle connection did not show in /api/links"
# serve samples each station's frames once a second: live-0, paced at 400
# frames/s, must show a rate near that over 1 s and 60 s.
live_rate() {
    curl -sf "http://$admin/api/links" | python3 -c '
import json, sys
l = {l["station"]: l for l in json.load(sys.stdin)}["live-0"]
r1, r60 = l["frames_per_s_1s"], l["frames_per_s_60s"]
if r1 is None or r60 is None:
    sys.exit(1)
if not (100 <= r1 <= 2000 and 100 <= r60 <= 2000):
    print(f"live-0 rates {r1} and {r60} frames/s, paced at 400", file=sys.stderr)
    sys.exit(2)
print(f"live-0: {r1:.0f} frames/s over 1 s, {r60:.0f} over 60 s (paced at 400)")'
}
rate_line=""
for _ in $(seq 100); do rate_line=$(live_rate) && break; sleep 0.05; done
[ -n "$rate_line" ] || fail "no frames/s for live-0 in /api/links after 5 s (or far from 400)"
echo "$rate_line"
sleep 1

# browse BUDGET_MS ARGS...: headless Chromium on the page for BUDGET_MS of
# virtual time (timers run ahead of the real clock; the page takes its rate
# intervals from serve's X-Meridian-Time header, so its rates stay true).
browse() {
    local budget=$1; shift
    timeout 90 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$(mktemp -d "$tmp/profile.XXXXXX")" --virtual-time-budget="$budget" \
        "$@" "http://$admin/" 2>>"$tmp/chromium.err"
}
browse 5000 --dump-dom >"$tmp/dom.html" || fail "chromium --dump-dom failed: $(tail -n1 "$tmp/chromium.err")"
rm -f "$shot"
browse 20000 --screenshot="$shot" --window-size=1400,820 >/dev/null ||
    fail "chromium --screenshot failed: $(tail -n1 "$tmp/chromium.err")"
[ -s "$shot" ] || fail "chromium wrote no screenshot at $shot"

# serve's summary, after the extra connections are gone.
kill "$live" "$idle" 2>/dev/null || true
wait "$live" 2>/dev/null || true
wait "$idle" 2>/dev/null || true
kill -TERM "$serve"
wait "$serve" || fail "serve exited with $?: $(tail -n1 "$tmp/serve.err")"
wait "$sink" || fail "sink exited with $?: $(tail -n1 "$tmp/sink.err")"
pids=()

python3 - "$tmp/serve.err" "$tmp/dom.html" "${hostile}0" <<'PY' || exit 1
import json, sys
from html.parser import HTMLParser

def fail(msg):
    print(f"ui-check: {msg}", file=sys.stderr)
    sys.exit(1)

lines = [l for l in open(sys.argv[1]).read().splitlines() if l.startswith("{")]
if not lines:
    fail("no JSON summary from serve")
summary_all = json.loads(lines[-1])
summary = {s["station"]: s for s in summary_all["stations"]}

class Rows(HTMLParser):
    """Each <tr data-station> (and <tr data-sat>, as "sat N"): its cells'
    text by class; the tags seen."""
    def __init__(self):
        super().__init__()
        self.rows, self.row, self.cell, self.tags = {}, None, None, set()
    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        a = dict(attrs)
        if tag == "tr" and "data-station" in a:
            self.row = self.rows.setdefault(a["data-station"], {})
        elif tag == "tr" and "data-sat" in a:
            self.row = self.rows.setdefault("sat " + a["data-sat"], {})
        elif tag == "td" and self.row is not None:
            self.cell = (a.get("class") or "").split()
            for c in self.cell:
                self.row.setdefault(c, "")
    def handle_endtag(self, tag):
        if tag == "td":
            self.cell = None
        elif tag == "tr":
            self.row = None
    def handle_data(self, data):
        if self.row is not None and self.cell:
            for c in self.cell:
                self.row[c] += data

p = Rows()
p.feed(open(sys.argv[2]).read())
for name in ("gs-0", "gs-1"):
    if name not in summary:
        fail(f"{name} is not in serve's summary")
    want = summary[name]["frames_decoded"]
    if want <= 0:
        fail(f"{name}: serve's summary has {want} frames")
    row = p.rows.get(name)
    if row is None:
        fail(f"{name} is not in the page's table (rows: {sorted(p.rows)})")
    got = row.get("frames", "").strip()
    if got != str(want):
        fail(f"{name}: the page shows {got!r} frames, serve's summary {want}")
    if row.get("station", "").strip() != name:
        fail(f"{name}: the station cell reads {row.get('station')!r}")
    print(f"{name}: {want} frames on the page and in serve's summary")

gap = p.rows.get("sat 4001")
if gap is None:
    fail(f"sat 4001 is not in the page's gap table (rows: {sorted(p.rows)})")
if gap.get("missing", "").strip() != "3" or gap.get("ranges", "").strip() != "7\u20139":
    fail(f"sat 4001's gap row reads {gap!r}, not 3 missing in 7\u20139")
if summary_all.get("missing", 0) < 3:
    fail(f"serve's summary counts {summary_all.get('missing')} missing, not at least 3")
print("sat 4001: gap 7\u20139 (3 missing) on the page and in /api/gaps")

hostile = sys.argv[3]
if "img" in p.tags:
    fail(f"the station name {hostile!r} became an <img> element")
got = p.rows.get(hostile, {}).get("station")
if got != hostile:
    fail(f"the station {hostile!r} is shown as {got!r}")
print(f"{hostile}: shown as text")
PY
echo "screenshot: $shot"
echo "ui-check: ok"
