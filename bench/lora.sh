#!/usr/bin/env bash
# Hand-run benchmarks for `scopectl lora` on full-size synthetic Wan2.1 14B LoRAs.
# Not part of CI (.ci/run only runs go vet / gofmt / go test). Usage:
#
#   bash bench/lora.sh            # RUNS=5 repetitions per timing
#   RUNS=10 bash bench/lora.sh
#
# It measures, each next to its peer in the same run:
#   1. inspect --no-hash reads only the header: read syscalls and bytes read on the
#      LoRA's file descriptor (strace), wall time, against the file size and `cat FILE`;
#   2. convert throughput (comfy -> kohya) against `cp` (and `cp` + fsync, since convert
#      fsyncs its output), warm page cache and, when root may drop caches, cold;
#   3. peak RSS of convert (/usr/bin/time -v) on ~150 MB and ~1 GB files, to show it does
#      not grow with the file.
# Needs: go, strace, GNU time (/usr/bin/time); hyperfine is used when installed.
# As root on Debian/Ubuntu it apt-get installs the missing ones.
# Everything is built and generated under a temporary directory in /tmp, removed on exit.
# The printed report is also saved to bench/out/lora.txt (git-ignored).
set -euo pipefail

RUNS=${RUNS:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/scopectl-bench.XXXXXX)
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

# ---------------------------------------------------------------- tools
need=()
command -v strace >/dev/null || need+=(strace)
[ -x /usr/bin/time ] || need+=(time)
command -v hyperfine >/dev/null || need+=(hyperfine)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${need[*]} with apt-get..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1; } || true
fi
command -v strace >/dev/null || { echo "strace is required" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "GNU time (/usr/bin/time) is required" >&2; exit 1; }
HYPERFINE=$(command -v hyperfine || true)

BIN=$WORK/bin
mkdir -p "$BIN" "$WORK/data"
echo "building scopectl and genlora into $BIN..." >&2
(cd "$ROOT" && go build -o "$BIN/scopectl" ./cmd/scopectl && go build -o "$BIN/genlora" ./internal/lora/loratest/genlora)
SCOPECTL=$BIN/scopectl

# ---------------------------------------------------------------- page cache
CAN_DROP=no
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
if (drop_caches) 2>/dev/null; then
  CAN_DROP=yes
  # Trust it only if it really empties the cache of a file we just read.
  if command -v fincore >/dev/null; then
    head -c 8388608 /dev/urandom >"$WORK/probe"
    cat "$WORK/probe" >/dev/null
    drop_caches
    res=$(fincore -bno RES "$WORK/probe" 2>/dev/null | tr -d ' ' || echo "?")
    [ "$res" = 0 ] || CAN_DROP=no
    rm -f "$WORK/probe"
  fi
fi

# ---------------------------------------------------------------- files
MODS=self_attn.q,self_attn.k,self_attn.v,self_attn.o,cross_attn.q,cross_attn.k,cross_attn.v,cross_attn.o,ffn.0,ffn.2
D=$WORK/data
gen() { "$BIN/genlora" -modules "$MODS" "$@"; }
echo "generating LoRAs in $D..." >&2
gen -family comfy -rank 16 "$D/comfy147.safetensors"              # ai-toolkit, no alpha
gen -family kohya -rank 16 -alpha 8 "$D/kohya147.safetensors"     # 400 alpha keys
gen -family comfy -rank 16 -alpha 8 "$D/comfya147.safetensors"    # alpha keys, for --fold-alpha
gen -family comfy -rank 112 "$D/comfy1g.safetensors"
gen -family kohya -rank 112 -alpha 56 "$D/kohya1g.safetensors"
gen -family comfy -rank 112 -alpha 56 "$D/comfya1g.safetensors"

size() { stat -c %s "$1"; }
mb() { awk -v b="$1" 'BEGIN{printf "%.1f", b/1e6}'; }

# ---------------------------------------------------------------- timing
# timeit PREPARE COMMAND: sets T_MED, T_MIN (seconds) over $RUNS runs, PREPARE run
# untimed before each. hyperfine when installed, else a date +%s%N loop.
timeit() {
  local prep=$1 cmd=$2
  if [ -n "$HYPERFINE" ]; then
    "$HYPERFINE" -N --style none --runs "$RUNS" --warmup 1 --prepare "sh -c '$prep'" \
      --export-json "$WORK/hf.json" "$cmd" >/dev/null 2>&1 ||
      "$HYPERFINE" --style none --runs "$RUNS" --warmup 1 --prepare "$prep" \
        --export-json "$WORK/hf.json" "$cmd" >/dev/null
    read -r T_MED T_MIN < <(tr -d '\n ' <"$WORK/hf.json" |
      sed -E 's/.*"median":([0-9.eE+-]+).*"min":([0-9.eE+-]+).*/\1 \2/'; echo)
  else
    local ts=() i t0 t1
    bash -c "$prep" >/dev/null 2>&1; bash -c "$cmd" >/dev/null 2>&1 # warmup
    for ((i = 0; i < RUNS; i++)); do
      bash -c "$prep" >/dev/null 2>&1
      t0=$(date +%s%N); bash -c "$cmd" >/dev/null 2>&1; t1=$(date +%s%N)
      ts+=($(((t1 - t0) / 1000)))
    done
    read -r T_MED T_MIN < <(printf '%s\n' "${ts[@]}" | sort -n |
      awk '{a[NR]=$1} END{m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.6f %.6f\n", m/1e6, a[1]/1e6}')
  fi
}
ms() { awk -v s="$1" 'BEGIN{printf "%.1f", s*1000}'; }
rate() { awk -v b="$1" -v s="$2" 'BEGIN{printf "%.0f", b/1e6/s}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }

REPORT=$WORK/report.txt
out() { printf "$@" | tee -a "$REPORT"; }

out '\nscopectl lora benchmarks — %s\n' "$(date -u +%Y-%m-%dT%H:%MZ)"
out 'host: %s, %s CPUs, %s; go %s; timing: %s, %s runs (median; min in brackets)\n' \
  "$(uname -sr)" "$(nproc)" "$(awk '/MemTotal/{printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo)" \
  "$(go env GOVERSION)" "$([ -n "$HYPERFINE" ] && echo hyperfine || echo 'date +%s%N loop')" "$RUNS"
out 'filesystem of %s: %s; cold cache (drop_caches): %s\n' "$WORK" "$(df -T "$WORK" | awk 'NR==2{print $2}')" \
  "$([ $CAN_DROP = yes ] && echo 'available (verified with fincore)' || echo 'NOT available: cold rows skipped, all figures warm')"

# ================================================================ 1. inspect
# strace -y prints each fd with its path, so reads on the LoRA's descriptors can be
# picked out; -f follows the Go runtime's threads (a read may start on one line
# "<unfinished ...>" and end on a "<... resumed>" line of the same thread).
strace_reads() { # FILE CMD... -> "calls bytes mmaps"
  local f=$1; shift
  strace -f -y -qq -e trace=read,pread64,readv,preadv,preadv2,mmap -o "$WORK/strace.txt" "$@" >/dev/null
  awk -v path="$f" '
    function ret(line) { sub(/.* = /, "", line); return line + 0 }
    {
      pid = $1
      if ($0 ~ /resumed>/) { if (pend[pid]) { calls++; bytes += ret($0); pend[pid] = 0 } ; next }
      if (index($0, "<" path ">") == 0) next
      if ($2 ~ /^mmap\(/) { mmaps++; next }
      if ($0 ~ /<unfinished \.\.\.>/) { pend[pid] = 1; next }
      calls++; bytes += ret($0)
    }
    END { printf "%d %d %d\n", calls, bytes, mmaps }' "$WORK/strace.txt"
}

out '\n1. inspect --no-hash reads only the header (read/pread64/readv on the LoRA file descriptors)\n'
out '%-34s %10s %7s %11s %9s %11s\n' "file" "size MB" "reads" "bytes read" "% of file" "header B"
for f in comfy147 kohya147 comfy1g kohya1g; do
  p=$D/$f.safetensors
  read -r calls bytes mmaps < <(strace_reads "$p" "$SCOPECTL" lora inspect --no-hash "$p")
  hdr=$(od -An -t u8 -N 8 "$p" | tr -d ' ')
  out '%-34s %10s %7s %11s %8s%% %11s\n' "$f.safetensors" "$(mb "$(size "$p")")" "$calls" "$bytes" \
    "$(awk -v a="$bytes" -v b="$(size "$p")" 'BEGIN{printf "%.4f", 100*a/b}')" "$((hdr + 8))"
  [ "$mmaps" = 0 ] || out '  (!) %s mmap calls on the file\n' "$mmaps"
done
out '(comfy = ai-toolkit, no alpha keys; kohya has 400 alpha scalars, read 4 bytes each)\n'

out '\n   wall time on comfy147 (%s MB)                     median ms   [min]\n' "$(mb "$(size "$D/comfy147.safetensors")")"
P=$D/comfy147.safetensors
timeit "true" "$SCOPECTL lora inspect --no-hash $P"; I_MED=$T_MED
out '   %-50s %8s   [%s]\n' "scopectl lora inspect --no-hash (warm)" "$(ms $T_MED)" "$(ms $T_MIN)"
timeit "true" "$SCOPECTL lora inspect $P"; IH_MED=$T_MED
out '   %-50s %8s   [%s]\n' "scopectl lora inspect (sha256 of whole file, warm)" "$(ms $T_MED)" "$(ms $T_MIN)"
timeit "true" "cat $P"; C_MED=$T_MED
out '   %-50s %8s   [%s]\n' "peer: cat FILE >/dev/null (warm)" "$(ms $T_MED)" "$(ms $T_MIN)"
timeit "true" "$SCOPECTL --help"
out '   %-50s %8s   [%s]\n' "floor: scopectl --help (process start)" "$(ms $T_MED)" "$(ms $T_MIN)"
if [ $CAN_DROP = yes ]; then
  timeit "sync; echo 3 >/proc/sys/vm/drop_caches" "$SCOPECTL lora inspect --no-hash $P"
  out '   %-50s %8s   [%s]\n' "scopectl lora inspect --no-hash (cold cache)" "$(ms $T_MED)" "$(ms $T_MIN)"
  timeit "sync; echo 3 >/proc/sys/vm/drop_caches" "cat $P"
  out '   %-50s %8s   [%s]\n' "peer: cat FILE >/dev/null (cold cache)" "$(ms $T_MED)" "$(ms $T_MIN)"
  timeit "sync; echo 3 >/proc/sys/vm/drop_caches" "$SCOPECTL --help"
  out '   %-50s %8s   [%s]\n' "floor: scopectl --help (cold: loads the binary)" "$(ms $T_MED)" "$(ms $T_MIN)"
fi

# ================================================================ 2. convert vs cp
out '\n2. convert throughput (comfy -> kohya, bit-for-bit copy + sha256 + fsync) vs cp of the same file\n'
out '%-10s %-5s %-34s %9s %9s %8s %10s\n' "file" "cache" "command" "median s" "[min s]" "MB/s" "convert/x"
OUT=$WORK/out.safetensors
for f in comfy147 comfy1g; do
  p=$D/$f.safetensors
  sz=$(size "$p")
  modes=warm
  [ $CAN_DROP = yes ] && modes="warm cold"
  for mode in $modes; do
    prep="rm -f $OUT; sync"
    [ "$mode" = cold ] && prep="rm -f $OUT; sync; echo 3 >/proc/sys/vm/drop_caches"
    timeit "$prep" "$SCOPECTL lora convert $p --to kohya -o $OUT"; cv=$T_MED; cvmin=$T_MIN
    timeit "$prep" "cp $p $OUT"; cpt=$T_MED; cpmin=$T_MIN
    timeit "$prep" "sh -c 'cp $p $OUT && sync $OUT'"; cps=$T_MED; cpsmin=$T_MIN
    out '%-10s %-5s %-34s %9.3f %9.3f %8s %10s\n' "$(mb "$sz")MB" "$mode" "scopectl lora convert --to kohya" "$cv" "$cvmin" "$(rate "$sz" "$cv")" ""
    out '%-10s %-5s %-34s %9.3f %9.3f %8s %10s\n' "" "$mode" "peer: cp" "$cpt" "$cpmin" "$(rate "$sz" "$cpt")" "$(ratio "$cpt" "$cv")"
    out '%-10s %-5s %-34s %9.3f %9.3f %8s %10s\n' "" "$mode" "peer: cp + fsync (sync FILE)" "$cps" "$cpsmin" "$(rate "$sz" "$cps")" "$(ratio "$cps" "$cv")"
  done
done
out '(convert/x = convert MB/s ÷ peer MB/s, from medians: 1.00 = as fast as the peer.\n'
out ' cp uses copy_file_range (in-kernel copy, no hash, no fsync); convert reads into user space,\n'
out ' hashes every output byte with sha256 and fsyncs before its atomic rename.)\n'
# What the hash costs: inspect with and without its whole-file sha256 (section 1) differ
# only by hashing 153 MB of warm data, with the same Go sha256 that convert uses.
hash_s=$(awk -v a="$IH_MED" -v b="$I_MED" 'BEGIN{print a-b}')
out 'read+sha256 in scopectl (inspect minus inspect --no-hash, 153 MB warm): %s MB/s, i.e. %.2f s of the\n' \
  "$(rate "$(size "$D/comfy147.safetensors")" "$hash_s")" "$(awk -v h="$hash_s" -v s="$(size "$D/comfy147.safetensors")" -v g="$(size "$D/comfy1g.safetensors")" 'BEGIN{print h*g/s}')"
out '1 GB convert above is hashing, done in line with the copy (not overlapped with the I/O)\n'

# ================================================================ 3. peak RSS
out '\n3. peak memory (max RSS, /usr/bin/time -v) of scopectl lora convert\n'
out '%-44s %9s %9s %9s %10s %9s\n' "conversion" "in MB" "out MB" "wall s*" "maxRSS MB" "RSS/in"
rss() { # IN ARGS... -> prints row
  local in=$1 label=$2; shift 2
  rm -f "$OUT"; sync
  /usr/bin/time -v -o "$WORK/time.txt" "$SCOPECTL" lora convert "$in" "$@" -o "$OUT" >/dev/null
  local k w
  k=$(awk -F': ' '/Maximum resident set size/{print $2}' "$WORK/time.txt")
  w=$(awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$WORK/time.txt")
  out '%-44s %9s %9s %9.2f %10.1f %8.1f%%\n' "$label" "$(mb "$(size "$in")")" "$(mb "$(size "$OUT")")" "$w" \
    "$(awk -v k="$k" 'BEGIN{print k*1024/1e6}')" "$(awk -v k="$k" -v s="$(size "$in")" 'BEGIN{print 100*k*1024/s}')"
}
declare -A RSS
for pair in "kohya147 kohya1g" "comfya147 comfya1g" "comfy147 comfy1g"; do
  for f in $pair; do
    case $f in
    kohya*) rss "$D/$f.safetensors" "$f: kohya+alpha -> diffusers" --to diffusers ;;
    comfya*) rss "$D/$f.safetensors" "$f: comfy+alpha -> kohya --fold-alpha" --to kohya --fold-alpha ;;
    comfy*) rss "$D/$f.safetensors" "$f: comfy -> kohya" --to kohya ;;
    esac
    RSS[$f]=$(awk -F': ' '/Maximum resident set size/{print $2}' "$WORK/time.txt")
  done
  set -- $pair
  out '%-44s maxRSS 1 GB / maxRSS 150 MB = %s (file size ratio %s)\n' "" \
    "$(ratio "${RSS[$2]}" "${RSS[$1]}")" "$(ratio "$(size "$D/$2.safetensors")" "$(size "$D/$1.safetensors")")"
done
rm -f "$OUT"
out '(* one run each, including the fsync of the output; see section 2 for throughput)\n'

mkdir -p "$ROOT/bench/out"
cp "$REPORT" "$ROOT/bench/out/lora.txt"
echo >&2
echo "report saved to bench/out/lora.txt" >&2
