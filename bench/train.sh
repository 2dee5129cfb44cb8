#!/usr/bin/env bash
# bench/train.sh — `scopectl train run` over an emulated link (../shared/netlab/link:
# 100 Mbit/s, 40 ms RTT, 0.1 % loss by default) against the ai-toolkit stand-in on host B.
# Run by hand as root: bash bench/train.sh   (CKPT_BYTES=147000000 INTERVAL=1s RATE RTT LOSS)
# Prints
#  - checkpoint: from the stand-in's "Saved checkpoint" line (stamped on B as it is written)
#    to "collected step N" from `train run` on A (verified, in the local library), against a
#    plain `ssh B cat FILE` of the same checkpoint over the same link, measured in the same
#    run (goal ≤ 1.2×);
#  - overhead: from `train run` starting to ai-toolkit starting (its train.log created on B),
#    with the dataset already on B (a second job: no dataset upload; no image: --aitk-dir).
# Both hosts share one clock (namespaces of one machine), so stamps from A and B compare.
set -euo pipefail
RATE=${RATE:-100mbit}; RTT=${RTT:-40ms}; LOSS=${LOSS:-0.001}
CKPT_BYTES=${CKPT_BYTES:-147000000}; INTERVAL=${INTERVAL:-1s}
repo=$(cd "$(dirname "$0")/.." && pwd)
link=${LINK:-$repo/../shared/netlab/link}
root=$(mktemp -d /tmp/bench-train.XXXXXX)
name=btrain
A="ip netns exec $name-a"; B="ip netns exec $name-b"; BIP=10.77.77.2
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  "$link" down "$name" >/dev/null 2>&1 || true
  pkill -f -- "$root/" 2>/dev/null || true # the log watchers' tail -F outlive their subshells
  rm -rf "$root"
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] || { echo "bench/train.sh needs root (network namespaces)"; exit 2; }
mkdir -p "$root/bin" "$root/aitk/bin" "$root/aitk/.venv/bin" "$root/aitk/config" "$root/ds" "$root/ws" /run/sshd
echo "building..."
(cd "$repo" && CGO_ENABLED=0 go build -o "$root/bin/scopectl" ./cmd/scopectl \
  && CGO_ENABLED=0 go build -o "$root/aitk/bin/python" ./internal/aitk/aitktest/standin \
  && go build -o "$root/bin/trainconf" ./bench/trainconf)
cp "$root/aitk/bin/python" "$root/aitk/bin/python3"; cp "$root/aitk/bin/python" "$root/aitk/.venv/bin/python"; : > "$root/aitk/run.py"
for i in 0 1 2; do echo x > "$root/ds/clip0$i.jpg"; echo "a clip" > "$root/ds/clip0$i.txt"; done
# rank 64: room for a real-size checkpoint (the stand-in stops adding tensors at CKPT_BYTES)
"$root/bin/trainconf" -name benchlora -dataset "$root/ds" -steps 20 -save-every 10 -rank 64 > "$root/job.json"
"$root/bin/trainconf" -name benchwarm -dataset "$root/ds" -steps 2 -save-every 10 > "$root/warm.json"
S=$root/bin/scopectl
export HOME=$root/home SCOPECTL_DATA_DIR=$root/data HF_TOKEN=
mkdir -p "$HOME/.ssh"

"$link" up "$name" --rate "$RATE" --rtt "$RTT" --loss "$LOSS" >/dev/null
ssh-keygen -q -t ed25519 -N '' -f "$root/hostkey"
ssh-keygen -q -t ed25519 -N '' -f "$HOME/.ssh/id_ed25519"
cp "$HOME/.ssh/id_ed25519.pub" "$root/authorized_keys"
cat > "$root/sshd_config" <<CFG
ListenAddress $BIP
Port 22
HostKey $root/hostkey
AuthorizedKeysFile $root/authorized_keys
PermitRootLogin yes
StrictModes no
UsePAM no
PidFile $root/sshd.pid
Subsystem sftp internal-sftp
CFG
# CLEAN_HOME=1: B's sessions get an empty HOME, so no ~/.bashrc runs per command (this
# machine's root .bashrc runs `pyenv init`, ~1 s a command; a pod's own .bashrc may too).
if [ -n "${CLEAN_HOME:-}" ]; then mkdir -p "$root/bhome"; echo "SetEnv HOME=$root/bhome" >> "$root/sshd_config"; fi
$B /usr/sbin/sshd -D -e -f "$root/sshd_config" 2>"$root/sshd.log" & pids+=($!)
sleep 1
echo "$BIP $(cut -d' ' -f1,2 "$root/hostkey.pub")" > "$HOME/.ssh/known_hosts"
host="ssh://root@$BIP:22"
run=(train run --host "$host" --aitk-dir "$root/aitk" --workspace "$root/ws" --force --no-prepull --interval "$INTERVAL")
# --no-prepull: the base model is not what is measured (no Hub here; a pod pulls it once)

# B side: stamp the job's train.log appearing and each "Saved checkpoint" line.
watchlog() { # job-name-glob out
  ( while :; do f=$(ls "$root"/ws/.scopectl/jobs/$1*/train.log 2>/dev/null | head -1 || true); [ -n "$f" ] && break; sleep 0.005; done
    echo "start $(date +%s.%N)"
    tail -n +1 -F "$f" 2>/dev/null | while IFS= read -r l; do case "$l" in *"Saved checkpoint"*) echo "saved $(date +%s.%N) $l";; esac; done ) >"$2" &
  pids+=($!)
}

echo "warm-up job (sends the dataset and scopectl to B)..."
$A "$S" "${run[@]}" "$root/warm.json" >/dev/null 2>"$root/warm.err" || { cat "$root/warm.err"; exit 1; }

echo "job: a $CKPT_BYTES-byte checkpoint at step 10..."
watchlog benchlora "$root/b.txt"
t0=$(date +%s.%N)
$A "$S" ${DETAIL:+-v} "${run[@]}" "$root/job.json" --env STANDIN_CKPT_BYTES="$CKPT_BYTES" --env STANDIN_STEP_MS=2000 \
  2> >(while IFS= read -r l; do echo "$(date +%s.%N) $l"; done >"$root/a.txt") >"$root/run.out"
sleep 0.5
start=$(awk '/^start/{print $2; exit}' "$root/b.txt")
saved=$(awk '/^saved/ && /_000000010/{print $2; exit}' "$root/b.txt")
coll=$(awk '/collected step 10:/{print $1; exit}' "$root/a.txt")
[ -n "$start" ] && [ -n "$saved" ] && [ -n "$coll" ] || { echo "missing stamps"; cat "$root/b.txt" "$root/a.txt"; exit 1; }
ckpt=$(ls "$root"/ws/.scopectl/jobs/benchlora*/collect/benchlora_000000010.safetensors)
size=$(stat -c %s "$ckpt")
echo "plain copy of the same file (ssh cat) over the same link..."
c0=$(date +%s.%N); $A ssh -o BatchMode=yes -o UserKnownHostsFile="$HOME/.ssh/known_hosts" -i "$HOME/.ssh/id_ed25519" root@$BIP cat "$ckpt" >"$root/plain.bin"; c1=$(date +%s.%N)
cmp -s "$ckpt" "$root/plain.bin" || { echo "plain copy differs"; exit 1; }
scp0=$(date +%s.%N); $A scp -q -o BatchMode=yes -o UserKnownHostsFile="$HOME/.ssh/known_hosts" -i "$HOME/.ssh/id_ed25519" root@$BIP:"$ckpt" "$root/plain2.bin"; scp1=$(date +%s.%N)
tr=$(echo "$coll - $saved" | bc); plain=$(echo "$c1 - $c0" | bc); scp=$(echo "$scp1 - $scp0" | bc)
over=$(echo "$start - $t0" | bc)
printf 'link %s, %s RTT, loss %s; checkpoint %d bytes; train run --interval %s\n' "$RATE" "$RTT" "$LOSS" "$size" "$INTERVAL"
printf 'checkpoint saved -> verified in the library: %6.2f s\n' "$tr"
printf 'plain ssh cat of the same file:             %6.2f s  (scp: %.2f s)\n' "$plain" "$scp"
printf 'ratio to ssh cat: %.2f   to scp: %.2f   (goal <= 1.2)\n' "$(echo "$tr / $plain" | bc -l)" "$(echo "$tr / $scp" | bc -l)"
printf 'train run start -> ai-toolkit started (dataset already on B): %.2f s\n' "$over"
if [ -n "${DETAIL:-}" ]; then # what train run said before ai-toolkit started, seconds from its start
  awk -v t0="$t0" -v s="$start" '$1 <= s {printf "  %6.2f s  %s\n", $1 - t0, substr($0, index($0, " ") + 1)}' "$root/a.txt"
fi
