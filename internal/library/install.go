package library

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/safetensors"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/store"
)

// Installing a LoRA into a folder (lora install, sync) is internal/lorasync's: one path
// for a local folder and a remote one, with one ownership record (OwnedName). The library
// prepares what is installed (Prepare) and says where it is installed (Installs).

// InstallOptions controls Prepare and lorasync.Install.
type InstallOptions struct {
	Dir      string // Scope's LoRA dir
	Pipeline string // optional: refuse LoRAs whose base does not fit it
	Force    bool   // install despite a base mismatch, unknown base, DoRA/diff tensors Scope drops, or a foreign file in the way
}

// InstallResult says what lorasync.Install did. Field names are part of --json.
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

// UninstallResult says what lorasync.Uninstall removed.
type UninstallResult struct {
	Name string `json:"name"`
	Path string `json:"path"`
}
