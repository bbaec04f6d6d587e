#!/usr/bin/env bash
# Instructions per request, per contender: the server runs under callgrind (instruction counts
# do not depend on the machine's noisy clock speed), pinned to CPU 0, while the load generator
# drives it from CPU 1 for a few seconds. Use it to see what a change to the hot path costs.
#
#   bench/callgrind.sh [CONTENDER ...]     (default: bare satchel-untouched satchel-read satchel-write)
#
# Needs valgrind. Leaves callgrind.out.<contender> in $OUT (default /tmp/satchel-callgrind) for
# callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p satchel-bench
BIN=target/release/satchel-bench
OUT=${OUT:-/tmp/satchel-callgrind}
mkdir -p "$OUT"
contenders=("$@")
[ ${#contenders[@]} -gt 0 ] || contenders=(bare satchel-untouched satchel-read satchel-write)
printf '%-24s %12s %14s\n' contender requests instr/request
for name in "${contenders[@]}"; do
  target=$("$BIN" list --targets | awk -v n="$name" '$1 == n { print $2 }')
  [ -n "$target" ] || { echo "unknown contender $name" >&2; exit 2; }
  exec 3< <(sleep 30)
  # Count only inside connection handling, so start-up and idle time do not dilute the figure.
  taskset -c 0 valgrind --tool=callgrind --toggle-collect="*handle_connection*" --callgrind-out-file="$OUT/callgrind.out.$name" \
    "$BIN" server --contenders "$name" <&3 >"$OUT/ports.$name" 2>"$OUT/log.$name" &
  server=$!
  for _ in $(seq 1 200); do [ -s "$OUT/ports.$name" ] && break; sleep 0.1; done
  port=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['ports'][sys.argv[2]])" "$OUT/ports.$name" "$name")
  completed=$(taskset -c 1 "$BIN" load --target "$name=$port:$target" --connections 8 --rounds 1 \
    --seconds 8 --warmup 0 --slice 0 | python3 -c "import json,sys; print(json.loads(sys.stdin.readline())['results'][0]['completed'])")
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  total=$(grep -E '^(summary|totals):' "$OUT/callgrind.out.$name" | head -1 | awk '{print $2}')
  printf '%-24s %12s %14s\n' "$name" "$completed" "$((total / completed))"
done
