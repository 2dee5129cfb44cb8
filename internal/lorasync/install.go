package lorasync

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/remote/file"
	"github.com/daydreamlive/scopectl/internal/store"
)

// Install puts the library LoRA ref into the local LoRA folder opt.Dir (Scope's) in the
// form whose effect in Scope is exactly B @ A × alpha/rank, atomically, recording it in
// Scope's lora_manifest.json and in the folder's ownership record: it is a sync of that one
// LoRA to file://DIR, with the same checks (a file scopectl did not put there, or one
// changed since, is replaced only with Force).
func Install(ctx context.Context, lib *library.Library, ref string, opt library.InstallOptions) (*library.InstallResult, error) {
	pr, err := lib.Prepare(ctx, ref, opt)
	if err != nil {
		return nil, err
	}
	r, err := file.New(opt.Dir)
	if err != nil {
		return nil, err
	}
	res := &Result{Remote: r.String(), Actions: []Action{}, Warnings: []string{}}
	sres, err := run(ctx, lib, r, []*library.Prepared{pr}, Options{Force: opt.Force, Pipeline: opt.Pipeline, Progress: lib.Progress, install: true}, res)
	if err != nil {
		return nil, err
	}
	status := "installed"
	if sres.Actions[0].Op == "skip" {
		status = "unchanged"
	}
	return &library.InstallResult{Name: pr.Entry.Name, Path: filepath.Join(r.Dir(), pr.File), Status: status, Form: pr.Form,
		SHA256: pr.SHA256, Size: pr.Size, Base: pr.Base, Warnings: append(pr.Warnings, sres.Warnings...)}, nil
}

// Uninstall removes from the local LoRA folder dir the files scopectl put there for ref (a
// library name or an installed file name), with their lora_manifest.json entries. Files
// scopectl did not put there are never touched; one changed since is removed only with
// force.
func Uninstall(ctx context.Context, lib *library.Library, ref, dir string, force bool) ([]library.UninstallResult, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	notFound := fmt.Errorf("%s: %w: scopectl installed no such LoRA in %s", ref, store.ErrNotFound, abs)
	if _, err := os.Stat(abs); errors.Is(err, fs.ErrNotExist) {
		return nil, notFound // and the folder is not made
	}
	r, err := file.New(abs)
	if err != nil {
		return nil, err
	}
	st, err := readState(ctx, lib, r)
	if err != nil {
		return nil, err
	}
	var out []library.UninstallResult
	var files []string
	for f, o := range st.owned.Files {
		if o.Name == ref || f == ref || f == ref+".safetensors" {
			files = append(files, f)
		}
	}
	sort.Strings(files)
	var firstErr error
	for _, f := range files {
		o := st.owned.Files[f]
		path := filepath.Join(abs, f)
		if have, present := st.files[f]; present && !force && !st.sameContent(ctx, r, have, o.SHA256) {
			firstErr = fmt.Errorf("%s was changed since scopectl installed it: %w (use --force to remove it anyway)", path, library.ErrRefused)
			break
		}
		if err := r.Delete(ctx, f); err != nil && !errors.Is(err, remote.ErrNotFound) {
			firstErr = err
			break
		}
		st.dropOwned(f)
		st.removeManifest(f)
		out = append(out, library.UninstallResult{Name: o.Name, Path: path})
	}
	if len(out) > 0 || st.migrating() {
		if err := st.save(ctx, lib, r); err != nil {
			return out, err
		}
	}
	if firstErr != nil {
		return out, firstErr
	}
	if len(out) == 0 {
		return nil, notFound
	}
	return out, nil
}
