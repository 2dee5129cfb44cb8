#!/usr/bin/env bash
# bench/sync.sh — scopectl sync over each remote against scp and the croc CLI, through an
# emulated link between two test hosts (../shared/netlab/link; netem does not exist here).
# Run by hand as root: bash bench/sync.sh   (FILES=10 RATE=100mbit RTT=40ms LOSS=0.001)
# ONLY="ssh agent" measures a subset (rows: tcp ssh agent s3 croc scp croccli;
# tcp is plain TCP through the same link, the ceiling of every TCP transport: bench/tcpceil).
# Prints MB/s per transport, the ratio to the link rate, and the payload bytes a second,
# unchanged sync sends (must be 0).
set -euo pipefail
ONLY=${ONLY:-tcp ssh agent s3 croc scp croccli}  # which rows to measure
FILES=${FILES:-10}; RATE=${RATE:-100mbit}; RTT=${RTT:-40ms}; LOSS=${LOSS:-0.001}
repo=$(cd "$(dirname "$0")/.." && pwd)
link=${LINK:-$repo/../shared/netlab/link}
root=$(mktemp -d /tmp/bench-sync.XXXXXX)
name=bsync
A="ip netns exec $name-a"; B="ip netns exec $name-b"; BIP=10.77.77.2
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  "$link" down "$name" >/dev/null 2>&1 || true
  rm -rf "$root"
}
trap cleanup EXIT

command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || apt-get install -y -qq openssh-server openssh-client >/dev/null
mkdir -p "$root/bin" "$root/src" "$root/b"/{ssh,agent,scp,croc} /run/sshd
echo "building binaries..."
(cd "$repo" && go build -o "$root/bin/scopectl" ./cmd/scopectl \
  && go build -o "$root/bin/genlora" ./internal/lora/loratest/genlora \
  && go build -o "$root/bin/s3server" ./bench/s3server \
  && go build -o "$root/bin/tcpceil" ./bench/tcpceil \
  && go build -o "$root/bin/croc" github.com/schollz/croc/v10)
S=$root/bin/scopectl
export HOME=$root/home SCOPECTL_DATA_DIR=$root/data
mkdir -p "$HOME/.ssh"

echo "generating $FILES LoRAs of 147 MB..."
mods=self_attn.q,self_attn.k,self_attn.v,self_attn.o,cross_attn.q,cross_attn.k,cross_attn.v,cross_attn.o,ffn.0,ffn.2
for i in $(seq 1 "$FILES"); do
  "$root/bin/genlora" -rank 16 -modules $mods -seed "$i" "$root/src/lora$i.safetensors"
done
"$S" lora add "$root/src" >/dev/null
total=$(du -cb "$root"/src/*.safetensors | tail -1 | cut -f1)

"$link" up "$name" --rate "$RATE" --rtt "$RTT" --loss "$LOSS" >/dev/null
rate_bits=$(echo "$RATE" | sed -e 's/mbit/*1000000/' -e 's/gbit/*1000000000/' -e 's/kbit/*1000/' | bc)
line_mbs=$(echo "scale=3; $rate_bits/8/1000000" | bc)

# Host B: sshd, scopectl agent, an S3 server, a croc relay.
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
$B /usr/sbin/sshd -D -e -f "$root/sshd_config" 2>"$root/sshd.log" & pids+=($!)
token=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
SCOPECTL_AGENT_TOKEN=$token $B "$S" agent --dir "$root/b/agent" --listen "$BIP:8765" >"$root/agent.log" 2>&1 & pids+=($!)
$B "$root/bin/s3server" -listen "$BIP:9000" -bucket vol >"$root/s3.log" 2>&1 & pids+=($!)
(cd "$root/b/croc" && exec $B "$root/bin/croc" relay --host "$BIP" --ports 9009,9010,9011,9012,9013 >"$root/relay.log" 2>&1) & pids+=($!)
$B "$root/bin/tcpceil" -listen "$BIP:5001" >"$root/tcpceil.log" 2>&1 & pids+=($!)
sleep 2
echo "$BIP $(cut -d' ' -f1,2 "$root/hostkey.pub")" > "$HOME/.ssh/known_hosts"

results=()
measure() { # label, then the command; prints seconds
  local t0 t1; t0=$(date +%s.%N); "$@" >"$root/last.out" 2>"$root/last.err" || { cat "$root/last.err" >&2; return 1; }; t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}
row() { # label seconds second-run-bytes
  local mbs ratio; mbs=$(echo "scale=2; $total/$2/1000000" | bc); ratio=$(echo "scale=2; $mbs/$line_mbs" | bc)
  results+=("$(printf '%-22s %8.1f s %8s MB/s %6s of link  second run: %s' "$1" "$2" "$mbs" "$ratio" "$3")")
  echo "  ${results[-1]}"   # at once, so that a later failure does not lose it
}
want() { case " $ONLY " in *" $1 "*) return 0;; esac; return 1; }
sent() { grep -o '"sent_bytes": [0-9]*' "$root/last.out" | awk '{print $2}'; }

if want tcp; then
echo "plain TCP, one connection (the ceiling)..."
s=$($A "$root/bin/tcpceil" -connect "$BIP:5001" -streams 1 -mb "$(( (total + 999999) / 1000000 ))")
row "plain TCP (ceiling)" "$s" "n/a"; tcp_s=$s
fi
if want ssh; then
echo "scopectl over ssh..."
s=$(measure $A "$S" sync --all --to "ssh://root@$BIP:22$root/b/ssh" --json); $A "$S" sync --all --to "ssh://root@$BIP:22$root/b/ssh" --json >"$root/last.out"; row "scopectl ssh" "$s" "$(sent) B"
fi
if want agent; then
echo "scopectl over the agent (HTTP)..."
export SCOPECTL_AGENT_TOKEN=$token
s=$(measure $A "$S" sync --all --to "http://$BIP:8765" --allow-http --json); $A "$S" sync --all --to "http://$BIP:8765" --allow-http --json >"$root/last.out"; row "scopectl agent" "$s" "$(sent) B"
fi
if want s3; then
echo "scopectl over S3..."
export SCOPECTL_S3_ENDPOINT=http://$BIP:9000 SCOPECTL_S3_REGION=us-east-1 SCOPECTL_S3_ACCESS_KEY_ID=bench SCOPECTL_S3_SECRET_ACCESS_KEY=benchbenchbench
s=$(measure $A "$S" sync --all --to "s3://vol/lora" --allow-http --json); $A "$S" sync --all --to "s3://vol/lora" --allow-http --json >"$root/last.out"; row "scopectl s3" "$s" "$(sent) B"
fi
if want croc; then
echo "scopectl over croc (to the croc CLI on B, one file at a time)..."
export CROC_SECRET=bench-$token
( cd "$root/b/croc" && for i in $(seq 1 "$FILES"); do $B "$root/bin/croc" --yes --overwrite --relay "$BIP:9009" >>"$root/croc-recv.log" 2>&1; done ) & rloop=$!
s=$(measure $A "$S" sync --all --to "croc://$BIP:9009" --croc-wait 2m --json); row "scopectl croc" "$s" "n/a (push-only)"
wait $rloop 2>/dev/null || true
rm -f "$root/b/croc"/*.safetensors
fi
if want scp; then
echo "scp..."
s=$(measure $A scp -q -o BatchMode=yes -o UserKnownHostsFile="$HOME/.ssh/known_hosts" -i "$HOME/.ssh/id_ed25519" "$root"/src/*.safetensors "root@$BIP:$root/b/scp/"); row "scp" "$s" "n/a (no sync)"
fi
if want croccli; then
echo "croc CLI through a local relay (one file at a time, as users do)..."
export CROC_SECRET=bench-$token
t0=$(date +%s.%N); i=0
for f in "$root"/src/*.safetensors; do
  # One code phrase per file, as users type a new one each time (the relay may still hold
  # the last room). The sender waits in the room first; the receiver joins (croc's order).
  # Every croc run is bounded by timeout, so the loop always ends.
  i=$((i + 1)); export CROC_SECRET=bench-$token-$i
  $A timeout 300 "$root/bin/croc" --relay "$BIP:9009" send "$f" >>"$root/croc-send.log" 2>&1 & sp=$!
  sleep 0.3
  for try in 1 2 3; do
    (cd "$root/b/croc" && $B timeout 300 "$root/bin/croc" --yes --overwrite --relay "$BIP:9009" >>"$root/croc-recv.log" 2>&1) && break
    echo "  croc receive failed (try $try): $(tail -c 200 "$root/croc-recv.log" | tr '\r' '\n' | tail -1)"; sleep 1
    kill -0 "$sp" 2>/dev/null || break # the sender gave up too
  done
  kill "$sp" 2>/dev/null || true
  wait "$sp" 2>/dev/null || true
done
[ "$(ls "$root/b/croc"/*.safetensors 2>/dev/null | wc -l)" = "$FILES" ] || echo "  croc CLI: only $(ls "$root/b/croc"/*.safetensors 2>/dev/null | wc -l) of $FILES files arrived"
t=$(echo "$(date +%s.%N) - $t0" | bc)
croc_s=$t; row "croc CLI" "$croc_s" "n/a (no sync)"

fi
echo
echo "link: $RATE, RTT $RTT, loss $LOSS; $FILES files, $total bytes; line rate $line_mbs MB/s"
printf '%s\n' "${results[@]}"
[ -n "${croc_s:-}" ] && for l in "${results[@]}"; do case $l in scopectl*) s1=$(echo "$l" | awk '{print $3}'); echo "$(echo "$l" | awk '{print $1, $2}') vs croc: $(echo "scale=2; $croc_s/$s1" | bc)x";; esac; done
[ -n "${tcp_s:-}" ] && for l in "${results[@]}"; do case $l in scopectl*|scp*|croc*) s1=$(echo "$l" | awk '{for(i=1;i<=NF;i++) if($(i+1)=="s"){print $i; exit}}'); echo "$(echo "$l" | awk '{print $1, $2}') vs plain TCP: $(echo "scale=2; $tcp_s/$s1" | bc)";; esac; done
"$link" down "$name" | tail -3
