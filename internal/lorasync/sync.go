// Package lorasync makes a remote LoRA folder hold chosen library LoRAs, in the form Scope
// applies exactly, sending only what is missing and keeping Scope's lora_manifest.json and
// scopectl's ownership record on the remote correct.
package lorasync

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/store"
)

// OwnedName is scopectl's record, in the remote folder, of the files it put there. A dot
// name ending in neither .safetensors nor .json: Scope ignores it.
const OwnedName = ".scopectl-owned"

// Owned is the ownership record's content.
type Owned struct {
	Version int                  `json:"version"`
	Files   map[string]OwnedFile `json:"files"`
}

// OwnedFile is one file scopectl published.
type OwnedFile struct {
	SHA256       string    `json:"sha256"`
	Size         int64     `json:"size"`
	SourceSHA256 string    `json:"source_sha256"`
	Name         string    `json:"name"`
	SyncedAt     time.Time `json:"synced_at"`
}

// FilesInFlight is how many files a sync sends at once.
var FilesInFlight = 2

// Options controls a sync.
type Options struct {
	Names    []string // library refs; empty with All = every entry
	All      bool
	Delete   bool // remove files scopectl put there before that are no longer wanted
	DryRun   bool
	Force    bool   // replace files scopectl did not put there; pass the base-model gate
	Pipeline string // base-model gate, as lora install
	Progress progress.Reporter
}

// Action is one step of the plan. Field names are part of --json.
type Action struct {
	Op      string `json:"op"` // put | skip | delete
	File    string `json:"file"`
	Name    string `json:"name,omitempty"`
	Size    int64  `json:"size"`
	SHA256  string `json:"sha256,omitempty"`
	Form    string `json:"form,omitempty"`
	Reason  string `json:"reason"`
	Sent    int64  `json:"sent"`
	Resumed int64  `json:"resumed"`
	Done    bool   `json:"done"`
}

// Result is a sync's outcome. Field names are part of --json.
type Result struct {
	Remote  string   `json:"remote"`
	DryRun  bool     `json:"dry_run"`
	Actions []Action `json:"actions"`
	Sent    int64    `json:"sent_bytes"` // payload bytes of LoRA files sent
	// Files whose leftovers of interrupted uploads were removed (S3: open multipart
	// uploads and their markers), because the file is complete anyway or, with --delete,
	// no longer wanted.
	Cleaned  []string `json:"cleaned,omitempty"`
	Warnings []string `json:"warnings"`
}

// Sync makes r hold the chosen LoRAs.
func Sync(ctx context.Context, lib *library.Library, r remote.Remote, opt Options) (*Result, error) {
	res := &Result{Remote: r.String(), DryRun: opt.DryRun, Actions: []Action{}, Warnings: []string{}}
	refs := opt.Names
	if opt.All {
		all, err := lib.Store.ListLoRAs(ctx, store.Filter{})
		if err != nil {
			return nil, err
		}
		for _, e := range all {
			refs = append(refs, e.SHA256)
		}
	}
	if len(refs) == 0 && !opt.Delete {
		return nil, errors.New("nothing to sync: name LoRAs or use --all")
	}
	var want []*library.Prepared
	for _, ref := range refs {
		pr, err := lib.Prepare(ctx, ref, library.InstallOptions{Pipeline: opt.Pipeline, Force: opt.Force})
		if err != nil {
			return nil, err
		}
		want = append(want, pr)
		res.Warnings = append(res.Warnings, pr.Warnings...)
	}
	st, err := readState(ctx, r)
	if err != nil {
		return nil, err
	}
	wanted := map[string]bool{}
	for _, pr := range want {
		wanted[pr.File] = true
		a := Action{Op: "put", File: pr.File, Name: pr.Entry.Name, Size: pr.Size, SHA256: pr.SHA256, Form: pr.Form}
		have, present := st.files[pr.File]
		owned, isOwned := st.owned.Files[pr.File]
		switch {
		case present && have.Size == pr.Size && st.sameContent(ctx, r, have, pr.SHA256):
			a.Op, a.Reason = "skip", "already there (size and sha256 match)"
		case present && !isOwned && !opt.Force:
			return nil, fmt.Errorf("%s on %s was not put there by scopectl: %w (use --force to replace it)", pr.File, r, library.ErrRefused)
		case present && isOwned && !opt.Force && !st.sameContent(ctx, r, have, owned.SHA256):
			return nil, fmt.Errorf("%s on %s was changed since scopectl put it there: %w (use --force to replace it)", pr.File, r, library.ErrRefused)
		case present:
			a.Reason = "content differs"
		default:
			a.Reason = "missing"
		}
		res.Actions = append(res.Actions, a)
	}
	if opt.Delete && st.pushOnly {
		return nil, fmt.Errorf("--delete needs a remote that can be listed; %s cannot", r)
	}
	if opt.Delete {
		var gone []string
		for file := range st.owned.Files {
			if !wanted[file] {
				gone = append(gone, file)
			}
		}
		sort.Strings(gone)
		for _, file := range gone {
			reason := "no longer wanted"
			if _, present := st.files[file]; !present {
				reason = "already gone"
			}
			res.Actions = append(res.Actions, Action{Op: "delete", File: file, Name: st.owned.Files[file].Name, Reason: reason})
		}
	}
	if opt.DryRun {
		return res, nil
	}
	changed := false
	// Puts run FilesInFlight at a time, so that one file's far-side verification and
	// fsync overlap the next file's transfer instead of idling the link.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	inFlight := FilesInFlight
	if st.pushOnly { // one code phrase, one peer: one file at a time
		inFlight = 1
	}
	slots := make(chan struct{}, inFlight)
	var total int64
	nput := 0
	for _, a := range res.Actions {
		if a.Op == "put" {
			total += a.Size
			nput++
		}
	}
	overall := opt.Progress.Start("sync", fmt.Sprintf("%d files to %s", nput, r), total)
	defer overall.Finish()
	for i := range res.Actions {
		a := &res.Actions[i]
		if a.Op != "put" {
			continue
		}
		pr := want[indexOf(want, a.File)]
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			err := put(ctx, r, pr, opt.Progress, overall, a)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			a.Done = true
			res.Sent += a.Sent
			st.owned.Files[a.File] = owned(a, pr)
			changed = true
		}()
	}
	wg.Wait()
	if firstErr != nil {
		if changed && !st.pushOnly { // record what did arrive, so the next run knows it owns those files
			_ = st.save(ctx, r)
		}
		return res, firstErr
	}
	for i := range res.Actions {
		a := &res.Actions[i]
		switch a.Op {
		case "delete":
			if err := r.Delete(ctx, a.File); err != nil && !errors.Is(err, remote.ErrNotFound) {
				return res, err
			}
			delete(st.owned.Files, a.File)
			st.manifest.Remove(a.File)
			changed = true
		case "skip":
			if o, ok := st.owned.Files[a.File]; !ok || o.SHA256 != a.SHA256 {
				pr := want[indexOf(want, a.File)]
				st.owned.Files[a.File] = owned(a, pr)
				changed = true
			}
		default:
			continue
		}
		a.Done = true
	}
	for _, pr := range want {
		if e, ok := st.manifest.Get(pr.File); !ok || e.SHA256 != pr.SHA256 || e.SizeBytes != pr.Size {
			st.manifest.Set(manifestEntry(pr))
			changed = true
		}
	}
	if tc, ok := r.(remote.TempCleaner); ok {
		var unwanted func(string) bool
		if opt.Delete {
			unwanted = func(name string) bool { return !wanted[name] }
		}
		cleaned, err := tc.CleanTemps(ctx, unwanted)
		res.Cleaned = cleaned
		if err != nil { // leftovers take space but harm nothing: the sync itself succeeded
			res.Warnings = append(res.Warnings, "cleaning up interrupted uploads: "+err.Error())
		}
	}
	if st.pushOnly {
		res.Warnings = append(res.Warnings, r.String()+" cannot be listed: every file was sent, and Scope's lora_manifest.json on the far side was not updated")
		return res, nil
	}
	if changed {
		if err := st.save(ctx, r); err != nil {
			return res, err
		}
	}
	return res, nil
}

// owned is the ownership record of a file this sync put (or found) on the remote.
func owned(a *Action, pr *library.Prepared) OwnedFile {
	return OwnedFile{SHA256: a.SHA256, Size: a.Size, SourceSHA256: pr.Entry.SHA256, Name: pr.Entry.Name, SyncedAt: time.Now().UTC()}
}

func indexOf(ps []*library.Prepared, file string) int {
	for i, p := range ps {
		if p.File == file {
			return i
		}
	}
	return -1
}

// put sends one file. Progress goes to the overall tracker and, for JSON events, to a
// tracker of its own (two bars redrawing one terminal line would garble it).
func put(ctx context.Context, r remote.Remote, pr *library.Prepared, rep progress.Reporter, overall *progress.Tracker, a *Action) error {
	f, err := os.Open(pr.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	var w io.Writer = overall
	if rep.Mode == progress.JSON {
		t := rep.Start("send", pr.File, pr.Size)
		defer t.Finish()
		w = io.MultiWriter(t, overall)
	}
	pres, err := r.Put(ctx, pr.File, remote.Source{R: f, Size: pr.Size, SHA256: pr.SHA256}, remote.PutOptions{Progress: w})
	a.Sent, a.Resumed = pres.Sent, pres.Resumed
	overall.Add(pres.Resumed) // bytes that were already there count as done
	if err != nil {
		return fmt.Errorf("sending %s to %s: %w", pr.File, r, err)
	}
	return nil
}

func manifestEntry(pr *library.Prepared) scope.ManifestEntry {
	return scope.ManifestEntry{Filename: pr.File, Provenance: library.Provenance(pr.Entry), SHA256: pr.SHA256, SizeBytes: pr.Size, AddedAt: time.Now().UTC()}
}

// state is what the remote holds, read once per sync.
type state struct {
	files    map[string]remote.Entry
	manifest *scope.Manifest
	owned    Owned
	hashes   map[string]string // far-side hashes computed during this sync
	pushOnly bool              // the remote cannot be listed (croc)
}

func readState(ctx context.Context, r remote.Remote) (*state, error) {
	st := &state{files: map[string]remote.Entry{}, manifest: scope.NewManifest(), owned: Owned{Version: 1, Files: map[string]OwnedFile{}}, hashes: map[string]string{}}
	entries, err := r.List(ctx)
	if errors.Is(err, errors.ErrUnsupported) {
		// A push-only remote (croc): the peer cannot be listed or read back, so every
		// file is sent and no manifest or ownership record can be kept there.
		st.pushOnly = true
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", r, err)
	}
	for _, e := range entries {
		st.files[e.Name] = e
	}
	if b, err := readSmall(ctx, r, scope.ManifestName); err == nil {
		m := scope.NewManifest()
		if err := json.Unmarshal(b, m); err != nil {
			return nil, fmt.Errorf("%s on %s: %w", scope.ManifestName, r, err)
		}
		st.manifest = m
	} else if !errors.Is(err, remote.ErrNotFound) {
		return nil, err
	}
	if b, err := readSmall(ctx, r, OwnedName); err == nil {
		if err := json.Unmarshal(b, &st.owned); err != nil || st.owned.Files == nil {
			return nil, fmt.Errorf("%s on %s is damaged; move it away to start over", OwnedName, r)
		}
	} else if !errors.Is(err, remote.ErrNotFound) {
		return nil, err
	}
	return st, nil
}

// sameContent verifies a remote file against a sha256: the listing's hash, else a hash
// computed on the far side, else the manifest's record when the size matches (a remote
// that can do neither, such as croc, cannot be checked without moving the data).
func (st *state) sameContent(ctx context.Context, r remote.Remote, e remote.Entry, sha string) bool {
	if e.SHA256 != "" {
		return e.SHA256 == sha
	}
	if h, ok := st.hashes[e.Name]; ok {
		return h == sha
	}
	if hr, ok := r.(remote.Hasher); ok {
		if h, err := hr.Hash(ctx, e.Name); err == nil {
			st.hashes[e.Name] = h
			return h == sha
		}
	}
	m, ok := st.manifest.Get(e.Name)
	return ok && m.SHA256 == sha && m.SizeBytes == e.Size
}

func (st *state) save(ctx context.Context, r remote.Remote) error {
	ob, err := json.MarshalIndent(st.owned, "", "  ")
	if err != nil {
		return err
	}
	if err := writeSmall(ctx, r, OwnedName, ob); err != nil {
		return err
	}
	mb, err := st.manifest.Encode()
	if err != nil {
		return err
	}
	return writeSmall(ctx, r, scope.ManifestName, mb)
}

const maxSmall = 16 << 20

func readSmall(ctx context.Context, r remote.Remote, name string) ([]byte, error) {
	rc, err := r.Get(ctx, name, 0)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxSmall+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSmall {
		return nil, fmt.Errorf("%s on %s is larger than %d bytes", name, r, maxSmall)
	}
	return b, nil
}

func writeSmall(ctx context.Context, r remote.Remote, name string, b []byte) error {
	s := sha256.Sum256(b)
	_, err := r.Put(ctx, name, remote.Source{R: bytes.NewReader(b), Size: int64(len(b)), SHA256: hex.EncodeToString(s[:])}, remote.PutOptions{})
	return err
}
