// Package agent is `scopectl agent`: a small authenticated HTTP receiver that runs on a
// pod next to Daydream Scope and publishes LoRAs into Scope's LoRA folder with the same
// promises as a local folder remote (atomic, verified, resumable).
//
// # API (version 1)
//
// Every path but /v1/health needs "Authorization: Bearer <token>"; a missing or wrong
// token gets 401. Errors are JSON {"error": "...", "code": "..."} (codes below).
//
//	GET    /v1/health                         {"status":"ok","api":"v1"} (no auth, nothing else)
//	GET    /v1/files                          [Entry] published regular files, sorted by name;
//	                                          sha256 from a cache keyed by (name, size, mtime,
//	                                          inode), computed within a time budget per listing
//	                                          (entries not hashed yet have no sha256)
//	GET    /v1/files/{name}                   the content; Range requests supported
//	GET    /v1/files/{name}/sha256            Entry with sha256 (computed if not cached)
//	DELETE /v1/files/{name}                   204
//	POST   /v1/uploads                        CreateRequest -> Upload: create or resume a session
//	PUT    /v1/uploads/{id}/chunks/{index}    body = chunk bytes, header X-Chunk-Sha256 -> 204
//	POST   /v1/uploads/{id}/commit            -> Entry (200), or 409 "incomplete" with
//	                                          "missing" chunk indexes, or 422 "hash_mismatch"
//	DELETE /v1/uploads/{id}                   abandon a session (204)
//
// An upload session is identified by (name, sha256): its id is derived from both, so a
// client that lost the id (or an agent that restarted) finds the same session again.
// The content goes to remote.TempName(name, sha256) in the folder, pre-sized to the final
// size; each chunk is verified against X-Chunk-Sha256, written at index*chunk_size,
// fsynced, and only then recorded in the session's state file (TempPrefix +
// "upload-<id>.state", written atomically). Commit re-reads the whole temporary file,
// checks every recorded chunk hash and the whole sha256, fsyncs, renames it to the final
// name and fsyncs the folder.
package agent

import (
	"time"

	"github.com/daydreamlive/scopectl/internal/remote"
)

// APIVersion is the path prefix of this API.
const APIVersion = "v1"

// Chunk sizes. Chunks stay far below the 100 MB request-body cap and ~100 s request
// timeout of RunPod's HTTPS proxy (Cloudflare).
const (
	DefaultChunkSize = 8 << 20
	MaxChunkSize     = 8 << 20
	MinChunkSize     = 64 << 10
	// MaxChunks bounds one upload (and its state file): 16384 × 8 MiB = 128 GiB.
	MaxChunks = 16384
)

// ChunkSHA256Header carries the lowercase hex sha256 of a chunk body.
const ChunkSHA256Header = "X-Chunk-Sha256"

// Error codes in ErrorBody.Code.
const (
	CodeUnauthorized  = "unauthorized"
	CodeBadRequest    = "bad_request"
	CodeBadName       = "bad_name"
	CodeNotFound      = "not_found"
	CodeNoUpload      = "no_upload" // the upload session does not exist (any more)
	CodeChunkMismatch = "chunk_mismatch"
	CodeIncomplete    = "incomplete"
	CodeHashMismatch  = "hash_mismatch"
	CodeTooLarge      = "too_large"
	CodeNoSpace       = "no_space" // the agent's disk is full: retrying will not help
	CodeBusy          = "busy"
	CodeTimeout       = "timeout"
	CodeInternal      = "internal"
)

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error   string `json:"error"`
	Code    string `json:"code"`
	Missing []int  `json:"missing,omitempty"` // CodeIncomplete: chunks to (re)send
}

// Health is the body of GET /v1/health.
type Health struct {
	Status string `json:"status"`
	API    string `json:"api"`
}

// Entry is a published file (the same fields as remote.Entry).
type Entry = remote.Entry

// CreateRequest is the body of POST /v1/uploads.
type CreateRequest struct {
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
	ChunkSize int64  `json:"chunk_size,omitempty"` // a wish; the reply says what applies
}

// Upload is a session, as returned by POST /v1/uploads.
type Upload struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	ChunkSize int64     `json:"chunk_size"` // use this one: a resumed session keeps its own
	Chunks    int       `json:"chunks"`
	Have      []int     `json:"have"` // chunks already received, verified and fsynced
	Created   time.Time `json:"created"`
}

// NumChunks is how many chunks of chunkSize make size bytes (0 for an empty file).
func NumChunks(size, chunkSize int64) int {
	if size <= 0 || chunkSize <= 0 {
		return 0
	}
	return int((size + chunkSize - 1) / chunkSize)
}

// ChunkLen is the length of chunk i.
func ChunkLen(size, chunkSize int64, i int) int64 {
	off := int64(i) * chunkSize
	return min(chunkSize, size-off)
}

// IsSHA256 reports whether s is 64 lowercase hex digits.
func IsSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
