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
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/remote/file"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/store"
)

// OwnedName is scopectl's record, in the folder, of the files it put there (the one
// record of ownership: see library.OwnedName).
const OwnedName = library.OwnedName

// Owned is the ownership record's content.
type Owned = library.Owned

// OwnedFile is one file scopectl published.
type OwnedFile = library.OwnedFile

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

	install bool // lora install: one LoRA, reported as an install
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
	return run(ctx, lib, r, want, opt, res)
}

// run makes r hold the prepared LoRAs want: the one path by which scopectl writes LoRAs
// into a folder, local (lora install) or remote (sync).
func run(ctx context.Context, lib *library.Library, r remote.Remote, want []*library.Prepared, opt Options, res *Result) (*Result, error) {
	st, err := readState(ctx, lib, r)
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
			if !isOwned && !opt.Force {
				a.Reason = "already there (size and sha256 match; not put there by scopectl, so left as it is)"
			}
		case present && !isOwned && !opt.Force:
			return nil, fmt.Errorf("%s was not put there by scopectl: %w (use --force to replace it)", st.where(r, pr.File), library.ErrRefused)
		case present && isOwned && !opt.Force && !st.sameContent(ctx, r, have, owned.SHA256):
			return nil, fmt.Errorf("%s was changed since scopectl put it there: %w (use --force to replace it)", st.where(r, pr.File), library.ErrRefused)
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
			have, present := st.files[file]
			if !present {
				reason = "already gone"
			} else if !opt.Force && !st.sameContent(ctx, r, have, st.owned.Files[file].SHA256) {
				return nil, fmt.Errorf("%s was changed since scopectl put it there: %w (use --force to remove it anyway)", st.where(r, file), library.ErrRefused)
			}
			res.Actions = append(res.Actions, Action{Op: "delete", File: file, Name: st.owned.Files[file].Name, Reason: reason})
		}
	}
	if opt.DryRun {
		return res, nil
	}
	changed := st.migrating()
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
	var overall *progress.Tracker
	if opt.install && len(want) == 1 {
		rep := opt.Progress
		if nput == 0 {
			rep = progress.Reporter{} // an install with nothing to write shows no progress, as before
		}
		overall = rep.Start("install", want[0].Entry.Name, total)
	} else {
		overall = opt.Progress.Start("sync", fmt.Sprintf("%d files to %s", nput, r), total)
	}
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
			err := put(ctx, lib, r, pr, opt, overall, a)
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
			st.setOwned(a.File, owned(a, pr, opt))
			changed = true
		}()
	}
	wg.Wait()
	if firstErr != nil {
		if changed && !st.pushOnly { // record what did arrive, so the next run knows it owns those files
			_ = st.save(ctx, lib, r)
		}
		return res, firstErr
	}
	for i := range res.Actions {
		a := &res.Actions[i]
		switch a.Op {
		case "delete":
			if err := r.Delete(ctx, a.File); err != nil && !errors.Is(err, remote.ErrNotFound) {
				if changed && !st.pushOnly {
					_ = st.save(ctx, lib, r)
				}
				return res, err
			}
			st.dropOwned(a.File)
			st.removeManifest(a.File)
			changed = true
		case "skip":
			// A file of the wanted content that scopectl did not put there stays the
			// user's (never removed by uninstall or --delete) unless --force claims it.
			o, ok := st.owned.Files[a.File]
			if (ok && o.SHA256 != a.SHA256) || (!ok && opt.Force) {
				pr := want[indexOf(want, a.File)]
				st.setOwned(a.File, owned(a, pr, opt))
				changed = true
			}
		default:
			continue
		}
		a.Done = true
	}
	for i, pr := range want {
		// A file just sent gets a fresh entry (its added_at is when it arrived); one left
		// in place keeps its entry while that still describes it.
		sent := res.Actions[i].Op == "put"
		if e, ok := st.manifest.Get(pr.File); sent || !ok || e.SHA256 != pr.SHA256 || e.SizeBytes != pr.Size {
			st.setManifest(manifestEntry(pr))
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
		if err := st.save(ctx, lib, r); err != nil {
			return res, err
		}
	}
	return res, nil
}

// owned is the ownership record of a file this sync put (or found) in the folder.
func owned(a *Action, pr *library.Prepared, opt Options) OwnedFile {
	return OwnedFile{SHA256: a.SHA256, Size: a.Size, SourceSHA256: pr.Entry.SHA256, Name: pr.Entry.Name, SyncedAt: time.Now().UTC(),
		Form: pr.Form, Pipeline: opt.Pipeline}
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
func put(ctx context.Context, lib *library.Library, r remote.Remote, pr *library.Prepared, opt Options, overall *progress.Tracker, a *Action) error {
	f, err := os.Open(pr.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	var w io.Writer = overall
	if opt.Progress.Mode == progress.JSON && !opt.install {
		t := opt.Progress.Start("send", pr.File, pr.Size)
		defer t.Finish()
		w = io.MultiWriter(t, overall)
	}
	pres, err := r.Put(ctx, pr.File, remote.Source{R: f, Size: pr.Size, SHA256: pr.SHA256}, remote.PutOptions{Progress: w})
	a.Sent, a.Resumed = pres.Sent, pres.Resumed
	overall.Add(pres.Resumed) // bytes that were already there count as done
	if err != nil {
		if errors.Is(err, remote.ErrHashMismatch) && pr.Path == pr.Entry.Path {
			// The library's own file changed under it: say so, with the fix.
			if cerr := lib.Check(ctx, pr.Entry); cerr != nil {
				return cerr
			}
		}
		return fmt.Errorf("sending %s to %s: %w", pr.File, r, err)
	}
	return nil
}

func manifestEntry(pr *library.Prepared) scope.ManifestEntry {
	return scope.ManifestEntry{Filename: pr.File, Provenance: library.Provenance(pr.Entry), SHA256: pr.SHA256, SizeBytes: pr.Size, AddedAt: time.Now().UTC()}
}

// state is what the folder holds, read once per sync, and the changes this sync makes to
// its records.
type state struct {
	files    map[string]remote.Entry
	manifest *scope.Manifest
	owned    *Owned
	hashes   map[string]string // far-side hashes computed during this sync
	pushOnly bool              // the remote cannot be listed (croc)
	// local is the folder's path when it is on this machine (lora install, sync to a
	// path): its records are then rewritten under Scope's manifest lock, and hashes of
	// unchanged files come from the library's cache.
	local string
	lib   *library.Library
	// legacy: files an older scopectl recorded as installed here in the library index
	// only; they are carried into the folder's record, and the index rows dropped, once
	// that record is written.
	legacy []string
	// edits replays this sync's changes on the records as they are when written (a local
	// folder's records are read again under the lock, so that concurrent runs merge).
	edits []func(*Owned, *scope.Manifest)
}

func (st *state) where(r remote.Remote, file string) string {
	if st.local != "" {
		return filepath.Join(st.local, file)
	}
	return fmt.Sprintf("%s on %s", file, r)
}

func (st *state) edit(fn func(*Owned, *scope.Manifest)) {
	fn(st.owned, st.manifest)
	st.edits = append(st.edits, fn)
}

func (st *state) setOwned(file string, f OwnedFile) {
	st.edit(func(o *Owned, _ *scope.Manifest) { o.Files[file] = f })
}

func (st *state) dropOwned(file string) {
	st.edit(func(o *Owned, _ *scope.Manifest) { delete(o.Files, file) })
}

func (st *state) setManifest(e scope.ManifestEntry) {
	st.edit(func(_ *Owned, m *scope.Manifest) { m.Set(e) })
}

func (st *state) removeManifest(file string) {
	st.edit(func(_ *Owned, m *scope.Manifest) { m.Remove(file) })
}

// migrating: the folder's record must be written to take over an older scopectl's.
func (st *state) migrating() bool { return len(st.legacy) > 0 }

func readState(ctx context.Context, lib *library.Library, r remote.Remote) (*state, error) {
	st := &state{files: map[string]remote.Entry{}, manifest: scope.NewManifest(), owned: library.NewOwned(), hashes: map[string]string{}}
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
		if st.owned, err = library.ParseOwned(b, r.String()); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, remote.ErrNotFound) {
		return nil, err
	}
	if f, ok := r.(*file.Folder); ok {
		st.local, st.lib = f.Dir(), lib
		// Read both records on the way in: what an older scopectl installed here and
		// recorded only in the library index is owned as before.
		rows, err := lib.Store.ListInstalls(ctx, st.local)
		if err != nil {
			return nil, err
		}
		for _, in := range rows {
			st.legacy = append(st.legacy, in.File)
			if _, ok := st.owned.Files[in.File]; !ok {
				of := library.OwnedFromInstall(in)
				file := in.File
				st.edit(func(o *Owned, _ *scope.Manifest) {
					if _, ok := o.Files[file]; !ok {
						o.Files[file] = of
					}
				})
			}
		}
	}
	return st, nil
}

// sameContent verifies a remote file against a sha256: the listing's hash, else a hash
// computed on the far side (for a local folder, the library's cached hash of the file),
// else the manifest's record when the size matches (a remote that can do neither, such as
// croc, cannot be checked without moving the data).
func (st *state) sameContent(ctx context.Context, r remote.Remote, e remote.Entry, sha string) bool {
	if e.SHA256 != "" {
		return e.SHA256 == sha
	}
	if h, ok := st.hashes[e.Name]; ok {
		return h == sha
	}
	if st.lib != nil && st.local != "" {
		if h, err := st.lib.FileSHA256(ctx, filepath.Join(st.local, e.Name)); err == nil {
			st.hashes[e.Name] = h
			return h == sha
		}
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

// save writes the folder's ownership record and Scope's manifest. A local folder's are
// read again and this sync's edits replayed on them under Scope's manifest lock (as lora
// install always did), so that two scopectl runs writing to one folder both keep theirs.
func (st *state) save(ctx context.Context, lib *library.Library, r remote.Remote) error {
	if st.local == "" {
		ob, err := st.owned.Encode()
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
	err := scope.UpdateManifest(st.local, func(m *scope.Manifest) error {
		o, err := library.ReadOwned(st.local)
		if err != nil {
			return err
		}
		for _, fn := range st.edits {
			fn(o, m)
		}
		return library.WriteOwned(st.local, o)
	})
	if err != nil {
		return err
	}
	// The folder's record now holds what the library index held for it: only one record
	// is written from now on.
	for _, file := range st.legacy {
		if err := lib.Store.DeleteInstall(ctx, st.local, file); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	st.legacy = nil
	lib.NoteInstallDir(st.local)
	return nil
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
