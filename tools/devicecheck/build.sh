#!/usr/bin/env bash
# Builds the static linux/amd64 binaries run.sh needs, into dist/ (carried to the device).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p dist
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -o dist/scopectl ./cmd/scopectl
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -o dist/genlora ./internal/lora/loratest/genlora
