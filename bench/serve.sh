#!/usr/bin/env bash
# bench/serve.sh: scopectl serve under wrk on loopback, with 10,000 LoRAs in the store.
# GET /api/v1/loras?limit=50 (the paged list, first page and a page deep inside) and
# /metrics, each printed beside a GET /healthz baseline measured in the same run.
# Goal: >= 5,000 req/s and p99 < 50 ms for the paged list.
# Needs wrk (apt-get install wrk). DURATION (default 10s), THREADS (2), CONNS (8), N (10000).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "bench/serve.sh: needs wrk (apt-get install wrk)"; exit 1; }
DURATION=${DURATION:-10s} THREADS=${THREADS:-2} CONNS=${CONNS:-8} N=${N:-10000}
out=bench/out/serve; mkdir -p "$out"
tmp=$(mktemp -d); trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
CGO_ENABLED=0 go build -o "$tmp/scopectl" ./cmd/scopectl
go run ./bench/servefill "$tmp" "$N"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SCOPECTL_DATA_DIR=$tmp RUNPOD_API_KEY= "$tmp/scopectl" serve --listen "127.0.0.1:$port" --every 1h 2>"$out/serve.log" &
pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -fs "$base/healthz" >/dev/null && break; sleep 0.1; done
deep=$(printf 'lora-%05d' $((N / 2)))
echo "scopectl serve, $N LoRAs, wrk -t$THREADS -c$CONNS -d$DURATION on $(nproc) cores ($(date -u +%F))"
printf '%-38s %12s %10s %10s %10s\n' endpoint req/s p50 p99 errors
run() {
  local name=$1 url=$2 log="$out/$(echo "$1" | tr -c 'a-z0-9' _).txt"
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$url" >"$log"
  local rps p50 p99 errs
  rps=$(awk '/Requests\/sec/ {print $2}' "$log")
  p50=$(awk '$1=="50%" {print $2}' "$log")
  p99=$(awk '$1=="99%" {print $2}' "$log")
  errs=$(awk '/Non-2xx|Socket errors/ {printf "%s ", $0}' "$log")
  printf '%-38s %12s %10s %10s %10s\n' "$name" "$rps" "$p50" "$p99" "${errs:-0}"
}
run "GET /healthz (baseline)" "$base/healthz"
run "GET /api/v1/loras?limit=50" "$base/api/v1/loras?limit=50"
run "GET /api/v1/loras?limit=50&after=mid" "$base/api/v1/loras?limit=50&after=$deep"
run "GET /metrics" "$base/metrics"
