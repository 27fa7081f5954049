#!/usr/bin/env bash
# Throughput of the kcptun-rs tunnel pair (our client + our server) against
# kcptun's own pair (Go client + Go server) on loopback, in alternation:
# fast3, windows 1024/1024, AES, FEC 10/3, smux v2, compression on and off.
# One TCP connection pushes SIZE_MIB of random bytes through the tunnel to a
# sink that acknowledges the last byte; MB/s = bytes / (connect .. ack).
# Each configuration runs ROUNDS times; the table gives the median and writes
# it to docs/benchmarks.md (section "kcptun tunnel"). Not a test: no timing
# is asserted anywhere.
#
# Env: SIZE_MIB (default 64), ROUNDS (default 3), KCPTUN_RS (our binary;
# default: cargo build --release --features tunnel), KCPTUN_CLIENT /
# KCPTUN_SERVER (default: kcptun-client / kcptun-server on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-64}
ROUNDS=${ROUNDS:-3}
if [ -z "${KCPTUN_RS:-}" ]; then
  cargo build --release --features tunnel --bin kcptun-rs >/dev/null
  KCPTUN_RS=$PWD/target/release/kcptun-rs
fi
GO_CLIENT=${KCPTUN_CLIENT:-$(command -v kcptun-client)}
GO_SERVER=${KCPTUN_SERVER:-$(command -v kcptun-server)}
# Optional third pair: kcptun rebuilt on kcp-go v5.6.64 (scripts/kcptun-peers).
NEW_DIR=target/kcptun-kcpgo5664
NEW_CLIENT=${KCPTUN_NEW_CLIENT:-$NEW_DIR/kcptun-client}
NEW_SERVER=${KCPTUN_NEW_SERVER:-$NEW_DIR/kcptun-server}
impls="rust go"
if [ -x "$NEW_CLIENT" ] && [ -x "$NEW_SERVER" ]; then impls="rust go new"; fi
GO_VERSION=$(dpkg-query -W -f='${Version}' kcptun 2>/dev/null || "$GO_SERVER" -v 2>&1 | head -1 || true)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/sink.py" <<'PY'
import socket, sys
n = int(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
while True:
    c, _ = s.accept()
    got = 0
    while got < n:
        d = c.recv(1 << 20)
        if not d: break
        got += len(d)
    if got == n: c.sendall(b"k")
    c.close()
PY
cat >"$work/push.py" <<'PY'
import socket, sys, os, time
port, n = int(sys.argv[1]), int(sys.argv[2])
block = os.urandom(1 << 20)
deadline = time.time() + 20
while True:
    try:
        c = socket.create_connection(("127.0.0.1", port)); break
    except OSError:
        if time.time() > deadline: raise
        time.sleep(0.05)
t0 = time.perf_counter()
left = n
while left > 0:
    k = min(left, len(block)); c.sendall(block[:k]); left -= k
ack = c.recv(1)
dt = time.perf_counter() - t0
if ack != b"k": sys.exit("no ack")
print("%.1f" % (n / dt / 1e6))
PY

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
uport() { python3 -c 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

bytes=$((SIZE_MIB * 1024 * 1024))
sinkp=$(port)
python3 "$work/sink.py" "$sinkp" "$bytes" & pids+=($!)

run() { # impl comp -> MB/s
  local impl=$1 comp=$2 u l common cpid spid
  u=$(uport); l=$(port)
  common=(--key bench --crypt aes --mode fast3 --sndwnd 1024 --rcvwnd 1024 --datashard 10 --parityshard 3
          --smuxver 2 --quiet)
  [ "$comp" = off ] && common+=(--nocomp)
  if [ "$impl" = rust ]; then
    "$KCPTUN_RS" server -l "127.0.0.1:$u" -t "127.0.0.1:$sinkp" "${common[@]}" 2>"$work/s.log" & spid=$!
    "$KCPTUN_RS" client -l "127.0.0.1:$l" -r "127.0.0.1:$u" "${common[@]}" 2>"$work/c.log" & cpid=$!
  elif [ "$impl" = new ]; then
    "$NEW_SERVER" -l "127.0.0.1:$u" -t "127.0.0.1:$sinkp" "${common[@]}" 2>"$work/s.log" & spid=$!
    "$NEW_CLIENT" -l "127.0.0.1:$l" -r "127.0.0.1:$u" "${common[@]}" 2>"$work/c.log" & cpid=$!
  else
    "$GO_SERVER" -l "127.0.0.1:$u" -t "127.0.0.1:$sinkp" "${common[@]}" 2>"$work/s.log" & spid=$!
    "$GO_CLIENT" -l "127.0.0.1:$l" -r "127.0.0.1:$u" "${common[@]}" 2>"$work/c.log" & cpid=$!
  fi
  local r
  r=$(timeout 300 python3 "$work/push.py" "$l" "$bytes" || echo fail)
  kill "$spid" "$cpid" 2>/dev/null || true
  wait "$spid" "$cpid" 2>/dev/null || true
  echo "$r"
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }

declare -A res
for round in $(seq "$ROUNDS"); do
  for comp in on off; do
    for impl in $impls; do
      v=$(run "$impl" "$comp")
      echo "round $round comp=$comp $impl: $v MB/s" >&2
      res[$impl-$comp]="${res[$impl-$comp]:-} $v"
    done
  done
done

if [ "$impls" = "rust go new" ]; then
  table="| compression | kcptun-rs pair (MB/s) | kcptun pair (MB/s) | Rust/Go | kcptun on kcp-go 5.6.64 (MB/s) | Rust/that |
|---|---|---|---|---|---|"
else
  table="| compression | kcptun-rs pair (MB/s) | kcptun pair (MB/s) | Rust/Go |
|---|---|---|---|"
fi
ratio() { awk -v r="$1" -v g="$2" 'BEGIN { if (g > 0) printf "%.2f", r / g; else print "n/a" }'; }
for comp in on off; do
  # shellcheck disable=SC2086
  r=$(median ${res[rust-$comp]}); g=$(median ${res[go-$comp]})
  row="| $comp | $r | $g | $(ratio "$r" "$g") |"
  if [ "$impls" = "rust go new" ]; then
    # shellcheck disable=SC2086
    n=$(median ${res[new-$comp]})
    row+=" $n | $(ratio "$r" "$n") |"
  fi
  table+="
$row"
done
echo "$table"

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
section="## kcptun tunnel

\`benches/tunnel_compare.sh\` ($(date -u +%Y-%m-%d), $(nproc) cores, $cpu): one TCP
connection pushes $SIZE_MIB MiB of random bytes through each tunnel pair over loopback
(client → KCP/UDP → server → TCP sink), fast3, windows 1024/1024, AES, FEC 10/3, smux v2;
median of $ROUNDS alternating runs. Go pair: Debian kcptun ${GO_VERSION:-?} (kcp-go 5.6.1,
smux 1.5.16); when built, also the same kcptun on kcp-go v5.6.64 (the kcp-go of current kcptun
releases). Random data does not compress, so \"on\" shows the cost of the Snappy layer.
The machine is shared with other jobs: runs vary by ±30 %; read the ratios, not the digits.

$table
"
doc=docs/benchmarks.md
mkdir -p docs
[ -f "$doc" ] || printf '# Benchmarks\n\n' >"$doc"
# Replace an earlier "kcptun tunnel" section, keep everything else.
python3 - "$doc" "$section" <<'PY'
import sys, re
path, section = sys.argv[1], sys.argv[2]
text = open(path).read()
m = re.search(r"^## kcptun tunnel\n.*?(?=^## |\Z)", text, flags=re.S | re.M)
text = text[:m.start()] + section + text[m.end():] if m else text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text)
PY
echo "written to $doc" >&2
