#!/usr/bin/env bash
# bench/pull.sh — `scopectl hub pull` from a fake Hugging Face Hub (bench/hfserver: the
# hftest Hub + CDN, one LFS file of random data) against a single-stream curl and
# `aria2c -x16 -s16` of the same signed CDN URL, through an emulated link between two test
# hosts (../shared/netlab/link; netem does not exist here). Server on end B, clients on A.
# Run by hand as root: bash bench/pull.sh
#   FILE_MB=1024 RATE=100mbit RTT=200ms LOSS=0.01 RUNS=1 CONNS= CURL_TIMEOUT=240 TIMEOUT=600
# CONNS: scopectl --connections (empty: its default). CURL_TIMEOUT caps curl (a partial
# rate is reported); TIMEOUT caps scopectl and aria2c. Prints MB/s per client, the ratio to
# the link rate and scopectl ÷ aria2c / curl; checks each file's sha256. The report is also
# saved to bench/out/pull.txt (git-ignored).
set -euo pipefail
FILE_MB=${FILE_MB:-1024}; RATE=${RATE:-100mbit}; RTT=${RTT:-200ms}; LOSS=${LOSS:-0.01}
RUNS=${RUNS:-1}; CONNS=${CONNS:-}; CURL_TIMEOUT=${CURL_TIMEOUT:-240}; TIMEOUT=${TIMEOUT:-600}
repo=$(cd "$(dirname "$0")/.." && pwd)
link=${LINK:-$repo/../shared/netlab/link}
name=bpull
A="ip netns exec $name-a"; B="ip netns exec $name-b"; BIP=10.77.77.2
HUB_PORT=8080 CDN_PORT=8081 STATS=127.0.0.1:8082 # stats: loopback inside B, off the link
[ "$(id -u)" = 0 ] || { echo "pull.sh: run as root (network namespaces)" >&2; exit 1; }
if [ -e "/run/netns/$name-a" ] || [ -e "/run/netns/$name-b" ]; then
  echo "pull.sh: link $name exists (another run?); if stale: $link down $name" >&2; exit 1
fi
root=$(mktemp -d /tmp/bench-pull.XXXXXX)
srv=; linkup=
cleanup() {
  set +e
  if [ -n "$srv" ]; then
    kill "$srv" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$srv" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$srv" 2>/dev/null
  fi
  [ -n "$linkup" ] && timeout 20 "$link" down "$name" >/dev/null 2>&1
  rm -rf "$root"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need=()
command -v curl >/dev/null || need+=(curl)
command -v aria2c >/dev/null || need+=(aria2)
command -v bc >/dev/null || need+=(bc)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}..."
  timeout 300 apt-get update -qq >/dev/null && timeout 300 apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "building binaries..."
(cd "$repo" && go build -o "$root/bin/scopectl" ./cmd/scopectl && go build -o "$root/bin/hfserver" ./bench/hfserver)
S=$root/bin/scopectl

"$link" up "$name" --rate "$RATE" --rtt "$RTT" --loss "$LOSS" >/dev/null; linkup=1
rate_bits=$(echo "$RATE" | sed -e 's/mbit/*1000000/' -e 's/gbit/*1000000000/' -e 's/kbit/*1000/' | bc)
line_mbs=$(echo "scale=3; $rate_bits/8/1000000" | bc)

echo "starting the fake Hub on B with a $FILE_MB MiB file..."
$B "$root/bin/hfserver" -hub "$BIP:$HUB_PORT" -cdn "$BIP:$CDN_PORT" -stats "$STATS" -mb "$FILE_MB" \
  >"$root/srv.out" 2>"$root/srv.err" & srv=$!
for _ in $(seq 240); do
  grep -qx READY "$root/srv.out" 2>/dev/null && break
  kill -0 "$srv" 2>/dev/null || break
  sleep 0.5
done
grep -qx READY "$root/srv.out" || { echo "hfserver did not start:" >&2; cat "$root/srv.err" >&2; exit 1; }
val() { sed -n "s/^$1=//p" "$root/srv.out"; }
endpoint=$(val HF_ENDPOINT); hrepo=$(val REPO); hfile=$(val FILE); size=$(val SIZE); want=$(val SHA256); cdn=$(val CDN_URL)

stat_get() { $B curl -s --max-time 5 "http://$STATS/stats" | grep -o "\"$1\":[0-9]*" | cut -d: -f2 || true; }
reset_stats() { $B curl -s --max-time 5 -X POST "http://$STATS/reset" >/dev/null || true; }

calc() { awk "BEGIN{printf \"%.2f\", $1}"; } # two decimals, with the leading zero
results=(); mbs_scopectl=(); mbs_curl=(); mbs_aria=()
# run LABEL FILE_TO_CHECK BYTES_IF_PARTIAL(file|server) CMD...: times CMD on end A, checks
# FILE's size and sha256, adds a row and prints the MB/s.
run() {
  local label=$1 out=$2 partial=$3; shift 3
  reset_stats
  local t0 t1 rc=0 secs first data got note mbs dmbs ratio
  t0=$(date +%s.%N)
  $A "$@" >"$root/last.out" 2>"$root/last.err" || rc=$?
  t1=$(date +%s.%N)
  secs=$(echo "$t1 - $t0" | bc)
  first=$(stat_get first_cdn_unix_ns)
  data=$secs; [ -n "$first" ] && [ "$first" != 0 ] && data=$(echo "scale=3; $t1 - $first/1000000000" | bc)
  got=$(stat -L -c %s "$out" 2>/dev/null || echo 0)
  if [ "$rc" = 0 ] && [ "$got" = "$size" ]; then
    if [ "$(sha256sum <"$out" | cut -d' ' -f1)" = "$want" ]; then note="sha256 ok"; else note="SHA256 MISMATCH"; fi
  else
    [ "$partial" = server ] && got=$(stat_get cdn_bytes)
    note="partial (exit $rc): $got of $size B"
    [ "$partial" = server ] && note="$note (server-sent, upper bound)"
    [ "$rc" = 124 ] || [ "$rc" = 28 ] || { echo "  $label exit $rc:"; tail -3 "$root/last.err"; }
  fi
  mbs=$(calc "$got/$secs/1000000"); dmbs=$(calc "$got/$data/1000000"); ratio=$(calc "$mbs/$line_mbs")
  results+=("$(printf '%-18s %6.1f s %6s MB/s %5s of link | %5.1f s to 1st CDN request, then %6s MB/s | %s' \
    "$label" "$secs" "$mbs" "$ratio" "$(echo "$secs - $data" | bc)" "$dmbs" "$note")")
  echo "  $label: $mbs MB/s ($note)"
  LAST_MBS=$mbs
}

conns_flag=(); [ -n "$CONNS" ] && conns_flag=(--connections "$CONNS")
dl=$root/dl
for r in $(seq 1 "$RUNS"); do
  echo "run $r/$RUNS:"
  rm -rf "$root/cache" "$root/data" "$dl"; mkdir -p "$dl" "$root/home"
  run "scopectl hub pull" "$root/cache/models--${hrepo/\//--}/blobs/$want" server \
    env HOME="$root/home" HF_HOME="$root/hfhome" HF_TOKEN= HF_HUB_CACHE="$root/cache" SCOPECTL_DATA_DIR="$root/data" \
      HF_ENDPOINT="$endpoint" timeout "$TIMEOUT" "$S" hub pull "hf://$hrepo" --include "$hfile" --allow-http "${conns_flag[@]}" --json
  mbs_scopectl+=("$LAST_MBS")
  run "curl (1 stream)" "$dl/curl.bin" file \
    curl -sS --max-time "$CURL_TIMEOUT" -o "$dl/curl.bin" "$cdn"
  mbs_curl+=("$LAST_MBS"); rm -f "$dl/curl.bin"
  run "aria2c -x16 -s16" "$dl/aria2c.bin" server \
    timeout "$TIMEOUT" aria2c -x16 -s16 --allow-overwrite=true --auto-file-renaming=false \
      --console-log-level=warn --summary-interval=0 -d "$dl" -o aria2c.bin "$cdn"
  mbs_aria+=("$LAST_MBS"); rm -f "$dl/aria2c.bin"
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ms=$(median "${mbs_scopectl[@]}"); mc=$(median "${mbs_curl[@]}"); ma=$(median "${mbs_aria[@]}")
counters=$(timeout 20 "$link" down "$name" 2>&1 | tail -3); linkup=
mkdir -p "$repo/bench/out"
{
  echo
  echo "link: $RATE, RTT $RTT, loss $LOSS; file $size B ($FILE_MB MiB); line rate $line_mbs MB/s; runs $RUNS"
  echo "scopectl --connections ${CONNS:-default}; curl capped at ${CURL_TIMEOUT}s; MB/s = 10^6 B/s"
  printf '%s\n' "${results[@]}"
  echo "medians: scopectl $ms MB/s, curl $mc MB/s, aria2c $ma MB/s"
  echo "scopectl / aria2c: $(calc "$ms/$ma")   scopectl / curl: $(calc "$ms/$mc")   (of link: scopectl $(calc "$ms/$line_mbs"), curl $(calc "$mc/$line_mbs"), aria2c $(calc "$ma/$line_mbs"))"
  echo "link counters:"; echo "$counters"
} | tee "$repo/bench/out/pull.txt"
