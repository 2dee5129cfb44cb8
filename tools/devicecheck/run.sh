#!/usr/bin/env bash
# Runs on the device machine (Python + torch + safetensors + peft, no Go): generates Wan
# LoRAs with scopectl's test generator, converts them with the real scopectl binary, and
# checks every result with check_lora.py. Build first, here: tools/devicecheck/build.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$here/../../dist
work=${WORK:-/tmp/lora-check}
rm -rf "$work" && mkdir -p "$work" && cd "$work"
export SCOPECTL_DATA_DIR=$work/data SCOPE_LORA_DIR=$work/scope
pairs=$work/pairs.txt; : > "$pairs"
gen() { "$bin/genlora" "$@"; }
# name family base rank alpha extra
gen -family comfy -base wan2.1-t2v-14b -rank 16 toolkit14b.safetensors
gen -family kohya -base wan2.1-t2v-14b -rank 16 -alpha 8 kohya14b_pow2.safetensors
gen -family kohya -base wan2.1-t2v-1.3b -rank 32 -alpha 24 kohya13b.safetensors
gen -family diffusers -base wan2.1-t2v-1.3b -rank 8 -alpha 4 diff13b_pow2.safetensors
gen -family kohya -base wan2.1-i2v-14b -rank 8 -alpha 3 -blocks 0,1,39 kohyai2v.safetensors
gen -family comfy -base wan2.1-t2v-1.3b -rank 4 -alpha 2 -dtype F32 comfy13b_alpha_pow2.safetensors
for src in toolkit14b kohya14b_pow2 kohya13b diff13b_pow2 kohyai2v comfy13b_alpha_pow2; do
  for to in diffusers comfy kohya; do
    "$bin/scopectl" lora convert $src.safetensors --to $to -o $src.$to.safetensors --json > /dev/null
    echo "convert $src.safetensors $src.$to.safetensors" >> "$pairs"
    "$bin/scopectl" lora convert $src.$to.safetensors --to $(case $to in diffusers) echo kohya;; *) echo diffusers;; esac) -o $src.$to.back.safetensors > /dev/null
    echo "convert $src.safetensors $src.$to.back.safetensors" >> "$pairs"
  done
  echo "peft $src.safetensors $src.diffusers.safetensors" >> "$pairs"
  "$bin/scopectl" lora convert $src.safetensors --to comfy --fold-alpha -o $src.fold.safetensors > /dev/null
  echo "fold $src.safetensors $src.fold.safetensors" >> "$pairs"
  "$bin/scopectl" lora add $src.safetensors > /dev/null
  "$bin/scopectl" lora install $src --force --json > $src.install.json
  echo "scope $src.safetensors $SCOPE_LORA_DIR/$src.safetensors" >> "$pairs"
done
"$bin/scopectl" lora ls
python3 "$here/check_lora.py" "$pairs"
