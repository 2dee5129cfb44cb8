// Package store is scopectl's LoRA index: the content-addressed library
// entries, where each came from, and what has been installed where.
// Store is an interface so that a server-side implementation can be added;
// SQLite is the embedded one.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

var (
	ErrNotFound  = errors.New("not found")
	ErrExists    = errors.New("already exists")
	ErrAmbiguous = errors.New("ambiguous")
)

// MinPrefix is the shortest sha256 prefix GetLoRA resolves.
const MinPrefix = 6

// Origin says where a LoRA came from. Kind: "local" (Path set),
// "huggingface" (Repo, Revision, Commit, File), "civitai" (ModelID,
// VersionID, URL), "training" (Job, Step, Path), "remote".
type Origin struct {
	Kind      string `json:"kind"`
	Path      string `json:"path,omitempty"`
	URL       string `json:"url,omitempty"`
	Repo      string `json:"repo,omitempty"`
	Revision  string `json:"revision,omitempty"`
	Commit    string `json:"commit,omitempty"`
	File      string `json:"file,omitempty"`
	ModelID   string `json:"model_id,omitempty"`
	VersionID string `json:"version_id,omitempty"`
	Job       string `json:"job,omitempty"`
	Step      int64  `json:"step,omitempty"`
	// What the hub says about the LoRA (CivitAI): its base model label and trigger words.
	BaseModel    string `json:"base_model,omitempty"`
	TriggerWords string `json:"trigger_words,omitempty"` // comma-separated, as the hub lists them
}

// LoRA is one library entry.
type LoRA struct {
	SHA256     string          `json:"sha256"` // lowercase hex, primary key
	Name       string          `json:"name"`   // unique (case-sensitive)
	Size       int64           `json:"size"`
	Path       string          `json:"path"`    // absolute path of the content
	Managed    bool            `json:"managed"` // true: in the library's blob dir; false: indexed in place
	Family     string          `json:"family"`  // diffusers | comfy | kohya | unknown
	Base       string          `json:"base"`    // wan2.1-t2v-14b | wan2.1-t2v-1.3b | wan2.1-i2v-14b | unknown
	Rank       int             `json:"rank"`
	Info       json.RawMessage `json:"info,omitempty"` // inspection report, opaque to the store
	Origins    []Origin        `json:"origins"`        // first = where first seen
	AddedAt    time.Time       `json:"added_at"`
	VerifiedAt *time.Time      `json:"verified_at,omitempty"`
}

// Filter selects LoRAs; empty fields match everything. Name is a
// case-insensitive substring, or, if it contains any of *?[ , a path.Match
// glob matched against the whole (case-sensitive) name.
type Filter struct {
	Base, Family, Name string
}

// Install records a file scopectl put into a Scope LoRA directory.
type Install struct {
	Dir          string    `json:"dir"`  // absolute dir
	File         string    `json:"file"` // relative filename; (Dir, File) is the key
	Name         string    `json:"name"`
	SourceSHA256 string    `json:"source_sha256"`
	SHA256       string    `json:"sha256"` // of the installed file (may differ from the source after conversion)
	Size         int64     `json:"size"`
	Form         string    `json:"form"`
	Pipeline     string    `json:"pipeline,omitempty"`
	InstalledAt  time.Time `json:"installed_at"`
}

// Store is the LoRA index.
type Store interface {
	// AddLoRA inserts l (and its origins). A zero AddedAt is set to now.
	// ErrExists (wrapped, naming what) if the sha256 or the name exists.
	AddLoRA(ctx context.Context, l LoRA) error
	// GetLoRA resolves ref by exact name, else by full sha256 or a unique
	// sha256 prefix of at least MinPrefix hex digits. ErrNotFound / ErrAmbiguous.
	GetLoRA(ctx context.Context, ref string) (LoRA, error)
	GetBySHA(ctx context.Context, sha string) (LoRA, error)
	// ListLoRAs returns matching LoRAs ordered by name.
	ListLoRAs(ctx context.Context, f Filter) ([]LoRA, error)
	// UpdateLoRA replaces name/path/managed/info/family/base/rank/verified_at
	// of the LoRA with l.SHA256. ErrNotFound, or ErrExists on a name clash.
	UpdateLoRA(ctx context.Context, l LoRA) error
	// AddOrigin appends o unless an equal origin is already recorded.
	AddOrigin(ctx context.Context, sha string, o Origin) error
	// DeleteLoRA removes the LoRA and its origins. ErrNotFound.
	DeleteLoRA(ctx context.Context, sha string) error
	// PutInstall inserts or replaces the install at (Dir, File). A zero
	// InstalledAt is set to now.
	PutInstall(ctx context.Context, in Install) error
	// ListInstalls returns installs in dir ("" = all), ordered by dir, file.
	ListInstalls(ctx context.Context, dir string) ([]Install, error)
	// DeleteInstall removes the install at (dir, file). ErrNotFound.
	DeleteInstall(ctx context.Context, dir, file string) error
	// PutSample records a sample, replacing the record with the same sha256.
	PutSample(ctx context.Context, sm Sample) error
	// ListSamples returns the samples of the LoRA with loraSHA ("" = all), by name.
	ListSamples(ctx context.Context, loraSHA string) ([]Sample, error)
	// GetFileHash returns what was recorded for the file at path (absolute). ErrNotFound.
	GetFileHash(ctx context.Context, path string) (FileHash, error)
	// PutFileHash records (replacing) the sha256 of the file at fh.Path. A zero CheckedAt
	// is set to now.
	PutFileHash(ctx context.Context, fh FileHash) error
	// DeleteFileHash forgets the file at path; forgetting an unknown path is not an error.
	DeleteFileHash(ctx context.Context, path string) error
	Close() error
}

// Sample is a file that shows what a LoRA does (a training sample image or video), kept
// in the library.
type Sample struct {
	SHA256  string    `json:"sha256"`
	Name    string    `json:"name"` // the file name it was pulled as
	Size    int64     `json:"size"`
	Path    string    `json:"path"`                  // where it lies in the library
	LoRA    string    `json:"lora_sha256,omitempty"` // the LoRA it shows, when known
	Origin  string    `json:"origin,omitempty"`      // where it was pulled from (no credentials)
	AddedAt time.Time `json:"added_at"`
}

// FileHash is the sha256 of a file as it was when scopectl last read it in full, with the
// size, modification time and inode it had then: while all three are unchanged (and the
// file was not modified in the seconds around that read), the sha256 still holds, as
// rsync and git assume.
type FileHash struct {
	Path      string    `json:"path"` // absolute
	Size      int64     `json:"size"`
	MtimeNs   int64     `json:"mtime_ns"`
	Inode     uint64    `json:"inode"` // 0 where the platform has none
	SHA256    string    `json:"sha256"`
	CheckedAt time.Time `json:"checked_at"`
}
