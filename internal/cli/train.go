package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/aitk"
	"github.com/daydreamlive/scopectl/internal/atomicfile"
)

func (a *app) trainCmd() *cobra.Command {
	cmd := group(&cobra.Command{Use: "train", Short: "Make and check ai-toolkit configs that train Wan video LoRAs"})
	cmd.AddCommand(a.trainInit(), a.trainValidate())
	cmd.AddCommand(a.trainRunCmds()...)
	return cmd
}

// trainInitResult is train init's --json output.
type trainInitResult struct {
	Path   string              `json:"path"`
	Name   string              `json:"name"`
	Base   aitk.Base           `json:"base"`
	Env    map[string]string   `json:"env"`
	Notes  []string            `json:"notes"`
	Memory aitk.MemoryEstimate `json:"memory"`
	Config *aitk.Config        `json:"config"`
}

func (a *app) trainInit() *cobra.Command {
	var o aitk.InitOptions
	var out string
	var force bool
	cmd := &cobra.Command{
		Use:   "init --base BASE --dataset DIR|NAME[@VERSION]",
		Short: "Write an ai-toolkit config from ai-toolkit's own Wan presets, sized for the GPU",
		Long: "Write an ai-toolkit job config for a Wan LoRA from ai-toolkit's own defaults (its UI presets and\n" +
			"example configs): clips as 4n+1 frames, quantization and low_vram for the GPU's memory, outputs in\n" +
			"/workspace/output, loss logged every step. Bases: " + strings.Join(baseNames(), ", ") + ".\n" +
			"The file is YAML unless -o ends in .json; an existing file is kept unless --force.\n" +
			"--dataset is a folder (as the training machine sees it, or here for `train run` to send) or a\n" +
			"library dataset (`scopectl dataset add`): NAME is written pinned to its newest version, NAME@N.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Base == "" || o.DatasetDir == "" {
				return usageError("--base and --dataset are needed")
			}
			ds, inLib, err := a.libraryDataset(cmd.Context(), o.DatasetDir)
			if err != nil {
				return err
			}
			if inLib {
				o.DatasetDir = fmt.Sprintf("%s@%d", ds.Name, ds.Version)
				if o.Name == "" {
					o.Name = jobNameFor(ds.Name)
				}
			}
			if _, ok := aitk.LookupBase(o.Base); !ok {
				return usageError("unknown --base %q (one of %s)", o.Base, strings.Join(baseNames(), ", "))
			}
			cfg, err := aitk.Init(o)
			if err != nil {
				return err
			}
			if inLib {
				cfg.Notes = append(cfg.Notes, fmt.Sprintf("dataset: library dataset %s (id %.12s, %d file(s), %d item(s)); `train run` sends it and records its id",
					o.DatasetDir, ds.ManifestSHA, ds.Files, ds.Items))
			}
			if out == "" {
				out = cfg.Config.Name + ".yaml"
			}
			format := aitk.YAML
			if out != "-" {
				if format, err = aitk.FormatOf(out); err != nil {
					return usageError("%v", err)
				}
			}
			data, err := cfg.Marshal(format)
			if err != nil {
				return err
			}
			if out == "-" {
				_, err := a.stdout.Write(data)
				return err
			}
			if !force {
				if _, err := os.Lstat(out); err == nil {
					return withCode(ExitRefused, fmt.Errorf("%s exists (use --force to replace it)", out))
				} else if !errors.Is(err, fs.ErrNotExist) {
					return err
				}
			}
			if err := atomicfile.WriteFile(out, data, 0o644); err != nil {
				return err
			}
			b, _ := aitk.LookupBase(o.Base)
			est, _ := aitk.EstimateMemory(&cfg.Config.Process[0])
			res := trainInitResult{Path: out, Name: cfg.Config.Name, Base: b, Env: cfg.Env, Notes: cfg.Notes, Memory: est, Config: cfg}
			return a.out(res, func(w io.Writer) {
				fmt.Fprintf(w, "wrote %s (%s, job %s)\n", out, b.Label, cfg.Config.Name)
				for _, n := range cfg.Notes {
					fmt.Fprintln(w, "  "+n)
				}
				keys := make([]string, 0, len(cfg.Env))
				for k := range cfg.Env {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				fmt.Fprint(w, "run it with:")
				for _, k := range keys {
					fmt.Fprintf(w, " %s=%s", k, cfg.Env[k])
				}
				fmt.Fprintf(w, " python run.py %s\n", filepath.Base(out))
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Base, "base", "", "base model: "+strings.Join(baseNames(), ", "))
	f.StringVar(&o.DatasetDir, "dataset", "", "dataset folder as the training machine sees it, or a library dataset NAME[@VERSION]")
	f.StringVar(&o.Name, "name", "", "job name: letters, digits, _ and - (default: from the dataset folder)")
	f.StringVar(&o.TriggerWord, "trigger", "", "trigger word added to captions and sample prompts")
	f.Float64Var(&o.GPUMemGiB, "gpu-mem", aitk.DefaultGPUMemGiB, "GPU memory in GiB to size the job for")
	f.IntVar(&o.Steps, "steps", 0, "training steps (default 3000, ai-toolkit's UI default)")
	f.StringVarP(&out, "output", "o", "", "file to write, .yaml/.yml or .json; - for stdout (default NAME.yaml)")
	f.BoolVar(&force, "force", false, "replace an existing file")
	return cmd
}

func baseNames() []string {
	var n []string
	for _, b := range aitk.Bases() {
		n = append(n, b.Name)
	}
	return n
}

// trainValidateResult is train validate's --json output.
type trainValidateResult struct {
	File     string               `json:"file"`
	Valid    bool                 `json:"valid"` // no errors
	Errors   int                  `json:"errors"`
	Warnings int                  `json:"warnings"`
	Problems []aitk.Problem       `json:"problems"`
	Memory   *aitk.MemoryEstimate `json:"memory,omitempty"` // of the first process, for Wan models
}

func (a *app) trainValidate() *cobra.Command {
	var o aitk.ValidateOptions
	var collect time.Duration
	cmd := &cobra.Command{
		Use:   "validate CONFIG",
		Short: "Check an ai-toolkit config before a run: one line per problem, exit 1 on errors",
		Long: "Check an ai-toolkit job config (YAML or JSON, read as run.py reads it) against ai-toolkit " + aitk.Version + "\n" +
			"and what makes a usable Wan video LoRA. Prints FIELD: message per problem, errors first; exits 1\n" +
			"if there is an error, 0 with only warnings. ${VAR} placeholders are not expanded (the variables\n" +
			"must exist where the run happens) and are reported as warnings.",
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			path := args[0]
			if _, err := aitk.FormatOf(path); err != nil {
				return usageError("%v", err)
			}
			cfg, err := aitk.ReadFile(path, aitk.ParseOptions{})
			if err != nil {
				return err
			}
			o.CollectBudget = collect
			o.Media = localMedia
			ps := aitk.Validate(cfg, o)
			res := trainValidateResult{File: path, Problems: ps}
			if res.Problems == nil {
				res.Problems = []aitk.Problem{}
			}
			for _, p := range ps {
				if p.Severity == aitk.Error {
					res.Errors++
				} else {
					res.Warnings++
				}
			}
			res.Valid = res.Errors == 0
			if len(cfg.Config.Process) > 0 {
				if e, ok := aitk.EstimateMemory(&cfg.Config.Process[0]); ok {
					res.Memory = &e
				}
			}
			if err := a.out(res, func(w io.Writer) {
				for _, p := range ps {
					msg := p.Message
					if p.Severity == aitk.Warning {
						msg = "warning: " + msg
					}
					fmt.Fprintf(w, "%s: %s\n", p.Field, msg)
				}
				if len(ps) == 0 {
					fmt.Fprintf(w, "%s: ok\n", path)
				}
			}); err != nil {
				return err
			}
			if !res.Valid {
				if !a.json {
					fmt.Fprintf(a.stderr, "scopectl: %s: %d error(s), %d warning(s)\n", path, res.Errors, res.Warnings)
				}
				return withCode(ExitFailure, errSilent)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.Float64Var(&o.GPUMemGiB, "gpu-mem", 0, "GPU memory in GiB: check the settings fit (0 skips the check)")
	f.DurationVar(&collect, "collect-budget", 2*time.Minute, "time a collector needs to copy a checkpoint off the machine; saves pruned sooner are errors (0 skips)")
	f.Float64Var(&o.SecondsPerStep, "sec-per-step", 0, "expected seconds per training step for the prune check (default: a fast case)")
	return cmd
}

// mediaExts are ai-toolkit's dataset extensions (toolkit/data_loader.py).
var (
	videoExts = []string{".mp4", ".avi", ".mov", ".webm", ".mkv", ".wmv", ".m4v", ".flv"}
	imageExts = []string{".jpg", ".jpeg", ".png", ".webp"}
)

// localMedia counts videos and images in a dataset folder when it exists on
// this machine (ai-toolkit walks it recursively, skipping hidden entries).
func localMedia(folder string) (videos, images int, ok bool) {
	if fi, err := os.Stat(folder); err != nil || !fi.IsDir() {
		return 0, 0, false
	}
	seen := 0
	err := filepath.WalkDir(folder, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if p != folder && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if seen++; seen > 200_000 {
			return fs.SkipAll
		}
		ext := strings.ToLower(filepath.Ext(d.Name()))
		switch {
		case d.IsDir():
		case slices.Contains(videoExts, ext):
			videos++
		case slices.Contains(imageExts, ext):
			images++
		}
		return nil
	})
	return videos, images, err == nil
}
