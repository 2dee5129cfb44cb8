package library

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/atomicfile"
	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/safetensors"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/store"
)

// InstallOptions controls Install.
type InstallOptions struct {
	Dir      string // Scope's LoRA dir
	Pipeline string // optional: refuse LoRAs whose base does not fit it
	Force    bool   // install despite a base mismatch, unknown base, DoRA/diff tensors Scope drops, or a foreign file in the way
}

// InstallResult says what Install did. Field names are part of --json.
type InstallResult struct {
	Name     string   `json:"name"`
	Path     string   `json:"path"`
	Status   string   `json:"status"` // installed | unchanged
	Form     string   `json:"form"`   // as-is | diffusion_model | bare+alpha
	SHA256   string   `json:"sha256"`
	Size     int64    `json:"size"`
	Base     string   `json:"base"`
	Warnings []string `json:"warnings"`
}

// ErrRefused marks installs refused by a safety gate (exit code 3 in the CLI).
var ErrRefused = errors.New("refused")

// Prepared is a library LoRA as a local file in the form whose effect in Scope is
// exactly B @ A × alpha/rank: the library blob itself when Scope already applies it
// exactly, otherwise a conversion kept in the staging folder.
type Prepared struct {
	Entry    store.LoRA
	Path     string // local file to copy or send
	File     string // file name in Scope's LoRA dir: <name>.safetensors
	SHA256   string
	Size     int64
	Form     string // as-is | diffusion_model | bare+alpha
	Base     string
	Warnings []string
}

// stagingVersion changes when the Scope form written for the same source changes.
const stagingVersion = "s1"

// Prepare resolves ref, applies the safety gate and produces the Scope form.
func (l *Library) Prepare(ctx context.Context, ref string, opt InstallOptions) (*Prepared, error) {
	e, err := l.Store.GetLoRA(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	// A file edited, truncated or removed behind the library's back is reported with its
	// fix here, before it is converted or sent anywhere.
	if err := l.Check(ctx, e); err != nil {
		return nil, err
	}
	f, err := safetensors.Open(e.Path)
	if err != nil {
		return nil, fmt.Errorf("library entry %s: %w", e.Name, err)
	}
	defer f.Close()
	p, err := lora.Analyze(f)
	if err != nil {
		return nil, err
	}
	rep := lora.Describe(p, e.Path)
	pr := &Prepared{Entry: e, File: e.Name + ".safetensors", Base: rep.Base, Warnings: []string{}}
	if err := gate(rep, opt, &pr.Warnings); err != nil {
		return nil, fmt.Errorf("%s: %w", e.Name, err)
	}
	if rep.ScopeReady && len(p.Unrecognized) == 0 {
		pr.Path, pr.SHA256, pr.Size, pr.Form = e.Path, e.SHA256, e.Size, "as-is"
		return pr, nil
	}
	copt := lora.ScopeOptions(p)
	pr.Form = "diffusion_model"
	if copt.Bare {
		pr.Form = "bare+alpha"
	}
	pr.Warnings = append(pr.Warnings, fmt.Sprintf("converted %s → %s form for Scope", rep.Family, pr.Form))
	staged := filepath.Join(filepath.Dir(l.BlobDir), "staging", e.SHA256+"."+stagingVersion+".safetensors")
	if fi, err := os.Stat(staged); err == nil {
		// Reuse an earlier conversion only if it is still intact.
		if sha, err := lora.HashFile(staged); err == nil {
			pr.Path, pr.SHA256, pr.Size = staged, sha, fi.Size()
			if r, err := lora.Inspect(staged, lora.InspectOptions{}); err == nil && r.ScopeReady {
				return pr, nil
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(staged), 0o755); err != nil {
		return nil, err
	}
	t := l.Progress.Start("convert", e.Name, rep.Bytes)
	copt.Progress = t
	cr, err := lora.WriteConverted(f, p, rep.Family, copt, staged)
	t.Finish()
	if err != nil {
		return nil, err
	}
	pr.Path, pr.SHA256, pr.Size = staged, cr.SHA256, cr.Bytes
	pr.Warnings = append(pr.Warnings, cr.Notes...)
	return pr, nil
}

// Install puts a library LoRA into Scope's LoRA dir in a form whose effect in Scope is
// exactly B @ A × alpha/rank, atomically, and records it in lora_manifest.json.
func (l *Library) Install(ctx context.Context, ref string, opt InstallOptions) (*InstallResult, error) {
	pr, err := l.Prepare(ctx, ref, opt)
	if err != nil {
		return nil, err
	}
	e := pr.Entry
	res := &InstallResult{Name: e.Name, Base: pr.Base, Form: pr.Form, Warnings: pr.Warnings}
	dir, err := filepath.Abs(opt.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	file := pr.File
	res.Path = filepath.Join(dir, file)

	installs, err := l.Store.ListInstalls(ctx, dir)
	if err != nil {
		return nil, err
	}
	var prev *store.Install
	for i := range installs {
		if installs[i].File == file {
			prev = &installs[i]
		}
	}
	if fi, err := os.Lstat(res.Path); err == nil {
		onDisk := ""
		if fi.Mode().IsRegular() {
			onDisk, _, _ = l.fileSHA(ctx, res.Path, file, fi)
		}
		switch {
		case onDisk == pr.SHA256 && (prev != nil || opt.Force):
			res.Status, res.SHA256, res.Size = "unchanged", pr.SHA256, pr.Size
			if prev != nil && prev.SHA256 == onDisk && prev.SourceSHA256 == e.SHA256 {
				return res, l.recordManifest(dir, file, e, pr.SHA256, pr.Size, false)
			}
		case prev == nil && !opt.Force:
			return nil, fmt.Errorf("%s already exists and was not installed by scopectl: %w (use --force to replace it)", res.Path, ErrRefused)
		case prev != nil && prev.SHA256 != onDisk && !opt.Force:
			return nil, fmt.Errorf("%s was changed since scopectl installed it: %w (use --force to replace it)", res.Path, ErrRefused)
		}
	}
	if res.Status == "" {
		t := l.Progress.Start("install", e.Name, pr.Size)
		res.SHA256, res.Size, err = copyAtomic(pr.Path, dir, file, t)
		t.Finish()
		if err != nil {
			return nil, err
		}
		if res.SHA256 != pr.SHA256 {
			os.Remove(res.Path)
			if pr.Path == e.Path {
				return nil, damaged(e, false, fmt.Sprintf("was changed (its sha256 is now %.12s)", res.SHA256))
			}
			return nil, fmt.Errorf("%s (the Scope form of %q) changed while it was being installed; install it again", pr.Path, e.Name)
		}
		res.Status = "installed"
	}
	if err := l.Store.PutInstall(ctx, store.Install{
		Dir: dir, File: file, Name: e.Name, SourceSHA256: e.SHA256, SHA256: res.SHA256,
		Size: res.Size, Form: res.Form, Pipeline: opt.Pipeline,
	}); err != nil {
		return nil, err
	}
	return res, l.recordManifest(dir, file, e, res.SHA256, res.Size, true)
}

// gate applies the safety checks, turning forced ones into warnings.
func gate(rep *lora.Report, opt InstallOptions, warnings *[]string) error {
	if len(rep.Problems) > 0 {
		return fmt.Errorf("damaged LoRA: %s", rep.Problems[0])
	}
	var refusals []string
	if opt.Pipeline != "" {
		if err := scope.CheckPipeline(opt.Pipeline, rep.Base); err != nil {
			if errors.Is(err, scope.ErrUnknownPipeline) {
				return err
			}
			refusals = append(refusals, strings.TrimSuffix(err.Error(), "; use --force to install anyway"))
		}
	} else if rep.Base == lora.BaseUnknown {
		refusals = append(refusals, "base model unknown: "+rep.BaseReason)
	}
	for _, u := range rep.Unusual {
		if strings.HasPrefix(u, "DoRA") || strings.Contains(u, "diff/diff_b") {
			refusals = append(refusals, "Scope applies only lora_A/lora_B pairs, so the trained effect would not be reproduced ("+u+")")
		}
	}
	if len(refusals) == 0 {
		return nil
	}
	if opt.Force {
		*warnings = append(*warnings, refusals...)
		return nil
	}
	return fmt.Errorf("%s: %w (use --force to install anyway)", refusals[0], ErrRefused)
}

func copyAtomic(src, dir, name string, progress io.Writer) (string, int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", 0, err
	}
	defer in.Close()
	af, err := atomicfile.Create(dir, name, 0o644)
	if err != nil {
		return "", 0, err
	}
	defer af.Abort()
	h := newHasher()
	n, err := io.Copy(io.MultiWriter(af, h, progress), in)
	if err != nil {
		return "", 0, err
	}
	if err := af.Commit(); err != nil {
		return "", 0, err
	}
	return h.hex(), n, nil
}

// Provenance is the Scope manifest provenance of a library entry (its first origin).
func Provenance(e store.LoRA) scope.Provenance {
	var o store.Origin
	if len(e.Origins) > 0 {
		o = e.Origins[0]
	}
	return provenance(o)
}

// provenance maps a library origin to Scope's manifest provenance.
func provenance(o store.Origin) scope.Provenance {
	opt := func(s string) *string {
		if s == "" {
			return nil
		}
		return scope.Str(s)
	}
	switch o.Kind {
	case "huggingface":
		return scope.Provenance{Source: scope.SourceHuggingFace, RepoID: opt(o.Repo), HFFilename: opt(o.File), URL: opt(o.URL)}
	case "civitai":
		return scope.Provenance{Source: scope.SourceCivitAI, ModelID: opt(o.ModelID), VersionID: opt(o.VersionID), URL: opt(o.URL)}
	case "remote":
		return scope.Provenance{Source: scope.SourceURL, URL: opt(o.URL)}
	}
	return scope.Provenance{Source: scope.SourceLocal}
}

func (l *Library) recordManifest(dir, file string, e store.LoRA, sha string, size int64, fresh bool) error {
	return scope.UpdateManifest(dir, func(m *scope.Manifest) error {
		if old, ok := m.Get(file); ok && !fresh && old.SHA256 == sha && old.SizeBytes == size {
			return nil
		}
		var o store.Origin
		if len(e.Origins) > 0 {
			o = e.Origins[0]
		}
		m.Set(scope.ManifestEntry{Filename: file, Provenance: provenance(o), SHA256: sha, SizeBytes: size, AddedAt: time.Now().UTC()})
		return nil
	})
}

// UninstallResult says what Uninstall removed.
type UninstallResult struct {
	Name string `json:"name"`
	Path string `json:"path"`
}

// Uninstall removes files scopectl installed for ref (a library name or an installed file
// name) from dir. Files scopectl did not install are never touched.
func (l *Library) Uninstall(ctx context.Context, ref, dir string, force bool) ([]UninstallResult, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	installs, err := l.Store.ListInstalls(ctx, dir)
	if err != nil {
		return nil, err
	}
	var out []UninstallResult
	for _, in := range installs {
		if in.Name != ref && in.File != ref && in.File != ref+".safetensors" {
			continue
		}
		path := filepath.Join(dir, in.File)
		if got, err := lora.HashFile(path); err == nil && got != in.SHA256 && !force {
			return out, fmt.Errorf("%s was changed since scopectl installed it: %w (use --force to remove it anyway)", path, ErrRefused)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return out, err
		}
		if err := scope.UpdateManifest(dir, func(m *scope.Manifest) error { m.Remove(in.File); return nil }); err != nil {
			return out, err
		}
		if err := l.Store.DeleteInstall(ctx, dir, in.File); err != nil {
			return out, err
		}
		out = append(out, UninstallResult{Name: in.Name, Path: path})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: %w: scopectl installed no such LoRA in %s", ref, store.ErrNotFound, dir)
	}
	return out, nil
}
