// Package inflight is the registry of transfers in flight that every scopectl process
// shares: one small JSON file per transfer in a folder of the data dir, rewritten
// atomically as bytes move and removed when the transfer ends. `scopectl sync`, `pull`
// and `train collect` write it (through progress.Reporter.Publish); `scopectl serve`
// reads it, so the page shows transfers the command line started too.
//
// A file whose process is gone (killed, crashed) is stale: List skips it and removes it.
// Nothing secret is written: an entry holds an operation, a file name and byte counts.
package inflight

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/daydreamlive/scopectl/internal/atomicfile"
)

// Entry is one transfer in flight.
type Entry struct {
	ID        string    `json:"id"`
	Op        string    `json:"op"`   // send, pull, download, upload, collect, …
	Item      string    `json:"item"` // the file
	PID       int       `json:"pid"`
	Host      string    `json:"host"` // the machine of PID
	Done      int64     `json:"done_bytes"`
	Total     int64     `json:"total_bytes"` // 0: unknown
	StartedAt time.Time `json:"started_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Dir is the registry's folder (DATA_DIR/transfers).
type Dir string

// Folder is the registry under a data dir.
func Folder(dataDir string) Dir { return Dir(filepath.Join(dataDir, "transfers")) }

// ext names registry files; anything else in the folder is ignored.
const ext = ".json"

// maxFile bounds what Parse reads of one file.
const maxFile = 64 << 10

// Every is how often a transfer's file is rewritten at most while bytes move.
var Every = time.Second

// Tracked ops: those that move bytes between places. Others (hashing, converting,
// training steps) are not transfers and are not published.
var Tracked = map[string]bool{"send": true, "pull": true, "download": true, "upload": true, "collect": true, "copy": true}

// Publish starts an entry for op on item and returns the function that reports its
// bytes done (end: the transfer is over, the file goes). It fits progress.Reporter's
// Publish. Writing is best effort: a registry that cannot be written shows nothing and
// never fails the transfer.
func (d Dir) Publish(op, item string, total int64) func(done int64, end bool) {
	if d == "" || !Tracked[op] {
		return func(int64, bool) {}
	}
	host, _ := os.Hostname()
	now := time.Now().UTC()
	t := &tracked{d: d, e: Entry{ID: newID(), Op: op, Item: filepath.Base(item), PID: os.Getpid(), Host: host,
		Total: max(total, 0), StartedAt: now, UpdatedAt: now}}
	if os.MkdirAll(string(d), 0o700) == nil {
		t.write()
	}
	return t.report
}

type tracked struct {
	mu    sync.Mutex
	d     Dir
	e     Entry
	last  time.Time
	ended bool
}

func (t *tracked) report(done int64, end bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ended {
		return
	}
	t.e.Done = done
	if end {
		t.ended = true
		os.Remove(t.path())
		return
	}
	if time.Since(t.last) >= Every {
		t.write()
	}
}

func (t *tracked) path() string { return filepath.Join(string(t.d), t.e.ID+ext) }

func (t *tracked) write() {
	t.last = time.Now()
	t.e.UpdatedAt = t.last.UTC()
	b, err := json.Marshal(t.e)
	if err != nil {
		return
	}
	_ = atomicfile.WriteFile(t.path(), b, 0o600)
}

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
}

// Parse reads one registry file: one line naming the field when it is not an entry.
func Parse(b []byte) (Entry, error) {
	var e Entry
	if len(b) > maxFile {
		return e, fmt.Errorf("larger than %d bytes", maxFile)
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("not a transfer entry (JSON): %s", firstLine(err.Error()))
	}
	switch {
	case e.ID == "" || strings.ContainsAny(e.ID, `/\`) || len(e.ID) > 100:
		return e, errors.New("id: want a file-name-safe id")
	case e.Op == "":
		return e, errors.New("op: missing")
	case e.PID <= 0:
		return e, fmt.Errorf("pid: want a process id, got %d", e.PID)
	case e.Done < 0 || e.Total < 0:
		return e, errors.New("done_bytes/total_bytes: must not be negative")
	}
	return e, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// List is every live entry, oldest first. Files of processes that are gone on this
// machine are removed; files that are not entries are skipped (older than a minute:
// removed, they are no write in progress).
func (d Dir) List() ([]Entry, error) {
	ents, err := os.ReadDir(string(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	var out []Entry
	for _, de := range ents {
		name := de.Name()
		if !strings.HasSuffix(name, ext) || atomicfile.IsTemp(name) || !de.Type().IsRegular() {
			continue
		}
		p := filepath.Join(string(d), name)
		b, err := readBounded(p)
		if err != nil {
			continue // removed meanwhile
		}
		e, err := Parse(b)
		if err != nil || e.ID+ext != name {
			if fi, serr := de.Info(); serr == nil && time.Since(fi.ModTime()) > time.Minute {
				os.Remove(p)
			}
			continue
		}
		if e.Host == host && !alive(e.PID) {
			os.Remove(p)
			continue
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].StartedAt.Equal(out[j].StartedAt) {
			return out[i].StartedAt.Before(out[j].StartedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

func readBounded(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxFile+1))
}
