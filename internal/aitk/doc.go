// Package aitk reads and writes the formats of ostris/ai-toolkit that scopectl
// relies on to train Wan video LoRAs: the job config (YAML or JSON, as run.py
// loads it), its validation and presets, the job control database the
// DiffusionTrainer polls, the loss_log.db metrics database, the console log,
// and the names of the files a run writes.
//
// Every fact here was read from ai-toolkit's source at commit 27a03a91
// (version 0.12.26, see Version and Commit); ai-toolkit changes often, so a
// newer image must be checked against its source before it is trusted. The
// package is a formats package: it imports nothing else of scopectl, does no
// networking, and its functions take typed inputs and return typed results so
// the CLI and an HTTP API can share them.
package aitk

// The ai-toolkit release the formats here were read from.
const (
	Version = "0.12.26"
	Commit  = "27a03a91"
)
