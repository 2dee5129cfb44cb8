package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/dataset"
	"github.com/daydreamlive/scopectl/internal/dataset/datasetlib"
	"github.com/daydreamlive/scopectl/internal/store"
)

// datasets opens the dataset side of the library.
func (a *app) datasets() (*datasetlib.Lib, error) {
	lib, err := a.library()
	if err != nil {
		return nil, err
	}
	return datasetlib.New(lib)
}

func (a *app) datasetLibCmds() []*cobra.Command {
	return []*cobra.Command{a.datasetAdd(), a.datasetLs(), a.datasetShow(), a.datasetRm(), a.datasetExport()}
}

func (a *app) datasetAdd() *cobra.Command {
	var (
		in        datasetlib.AddInput
		cfgPath   string
		numFrames int
	)
	cmd := &cobra.Command{
		Use:   "add DIR --name NAME",
		Short: "Keep a training dataset in the library, content-addressed: a job then records exactly which bytes it trained on",
		Long: `Checks DIR as ` + "`dataset check`" + ` does (refusing errors unless --force; warnings are printed),
then keeps what ai-toolkit reads of it in the library: media of its extensions, the captions and
other files named after them, _controls folders; hidden files, ai-toolkit's caches and symlinks
that leave the folder are left out. Every file is a blob by sha256 (the same bytes are kept once,
across datasets, versions and LoRAs); the sorted list of paths, sizes and sha256s is the version's
manifest, and its sha256 the dataset's id, the hash ` + "`train run`" + ` records for a job trained on it.
Adding NAME again with changed files makes a new version; with the same files nothing is copied.
An interrupted add leaves no dataset behind, and running it again copies only what is missing.

The check reads the folder with ai-toolkit's defaults (a folder with videos as a Wan video
dataset: 81 frames, 16 fps), or with --config's dataset and --num-frames.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if in.Name == "" {
				return usageError("--name is needed")
			}
			if err := datasetlib.ValidName(in.Name); err != nil {
				return usageError("%v", err)
			}
			in.Dir = args[0]
			if cfgPath != "" {
				o, _, err := optionsFromConfig(cfgPath, 0)
				if err != nil {
					return usageError("--config %s: %v", cfgPath, err)
				}
				in.Check = o
			}
			if cmd.Flags().Changed("num-frames") {
				if in.Check.NumFrames == 0 {
					in.Check = dataset.DefaultOptions()
				}
				in.Check.NumFrames = numFrames
			}
			dl, err := a.datasets()
			if err != nil {
				return err
			}
			res, err := dl.Add(cmd.Context(), in)
			if res != nil && res.Report != nil {
				a.datasetWarnings(res.Report, errors.Is(err, datasetlib.ErrRefused))
			}
			if errors.Is(err, datasetlib.ErrRefused) {
				if a.json {
					_ = a.out(res, func(io.Writer) {})
				}
				return withCode(ExitRefused, err)
			}
			if err != nil {
				return err
			}
			return a.out(res, func(w io.Writer) {
				d := res.Dataset
				switch res.Status {
				case "unchanged":
					fmt.Fprintf(w, "unchanged: %s version %d already holds these files (id %.12s); nothing copied\n", d.Name, d.Version, d.ManifestSHA)
				default:
					fmt.Fprintf(w, "added %s version %d (id %.12s): %d file(s), %d item(s), %s\n", d.Name, d.Version, d.ManifestSHA, d.Files, d.Items, humanBytes(d.Bytes))
					fmt.Fprintf(w, "  %d blob(s) stored (%s), %d already in the library\n", res.Stored, humanBytes(res.StoredBytes), res.Existing)
				}
				c := res.Check
				fmt.Fprintf(w, "  check: %d error(s), %d warning(s) (%d change training at num_frames %d), %d note(s)\n", c.Errors, c.Warnings, c.ChangesTraining, c.NumFrames, c.Notes)
				for i, s := range res.Skipped {
					if i == 10 {
						fmt.Fprintf(w, "  … and %d more not stored (--json lists them)\n", len(res.Skipped)-10)
						break
					}
					fmt.Fprintf(w, "  not stored: %s: %s\n", s.Path, s.Reason)
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&in.Name, "name", "", "dataset name (a library name, without '@')")
	f.BoolVar(&in.Force, "force", false, "add it even when the check finds errors")
	f.StringVar(&cfgPath, "config", "", "check with this ai-toolkit job config's first dataset settings")
	f.IntVar(&numFrames, "num-frames", 0, "check as a dataset of this num_frames (1: images)")
	return cmd
}

// datasetWarnings prints a check's errors (when refused) and warnings, one line each.
func (a *app) datasetWarnings(r *dataset.Report, refused bool) {
	show := func(prefix string, fs []dataset.Finding) {
		for _, f := range fs {
			switch {
			case f.Severity == dataset.Warning:
				a.warn(fmt.Sprintf("%s%s: %s", prefix, f.Code, f.Message))
			case f.Severity == dataset.Error && refused && !a.json:
				fmt.Fprintf(a.stderr, "%s%s: %s\n", prefix, f.Code, f.Message)
			}
		}
	}
	show("", r.Findings)
	for _, it := range r.Items {
		show(it.Path+": ", it.Findings)
	}
}

func (a *app) datasetLs() *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List the library's datasets (newest version of each)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dl, err := a.datasets()
			if err != nil {
				return err
			}
			ls, err := dl.List(cmd.Context())
			if err != nil {
				return err
			}
			return a.out(ls, func(w io.Writer) {
				if len(ls) == 0 {
					fmt.Fprintln(w, "no datasets (add one with `scopectl dataset add DIR --name NAME`)")
					return
				}
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tVERSION\tFILES\tITEMS\tSIZE\tID\tADDED")
				for _, e := range ls {
					fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%.12s\t%s\n", e.Name, e.Version, e.Files, e.Items, humanBytes(e.Bytes), e.ManifestSHA, e.CreatedAt.Local().Format("2006-01-02 15:04"))
				}
				tw.Flush()
			})
		},
	}
}

func (a *app) datasetShow() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME[@VERSION]",
		Short: "Show a dataset: its versions, the jobs trained on each, files and check summary",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dl, err := a.datasets()
			if err != nil {
				return err
			}
			res, err := dl.Show(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.out(res, func(w io.Writer) {
				fmt.Fprintf(w, "dataset %s\n", res.Name)
				for _, v := range res.Versions {
					fmt.Fprintf(w, "  version %d  id %s  %d file(s), %d item(s), %s  added %s from %s\n", v.Version, v.ManifestSHA, v.Files, v.Items,
						humanBytes(v.Bytes), v.CreatedAt.Local().Format("2006-01-02 15:04"), v.SourceDir)
					for _, j := range v.Jobs {
						fmt.Fprintf(w, "    trained: job %s (%s, %s), %d checkpoint(s) in the library\n", j.ID, j.Name, j.Phase, j.Checkpoints)
					}
				}
				if c := res.Check; c != nil {
					forced := ""
					if c.Forced {
						forced = " (added with --force)"
					}
					fmt.Fprintf(w, "check of version %d: %d video(s), %d image(s), %d will train, %.1fs of video; %d error(s), %d warning(s) (%d change training at num_frames %d), %d note(s)%s\n",
						res.Version, c.Videos, c.Images, c.Trained, c.VideoSeconds, c.Errors, c.Warnings, c.ChangesTraining, c.NumFrames, c.Notes, forced)
				}
				fmt.Fprintf(w, "files of version %d:\n", res.Version)
				for _, f := range res.Files {
					fmt.Fprintf(w, "  %s  %s  %.12s\n", f.Path, humanBytes(f.Size), f.SHA256)
				}
			})
		},
	}
}

func (a *app) datasetRm() *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME...",
		Short: "Forget datasets (every version); their files are deleted unless another dataset or a LoRA uses them",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dl, err := a.datasets()
			if err != nil {
				return err
			}
			out := []*datasetlib.RemoveResult{}
			for _, n := range args {
				res, err := dl.Remove(cmd.Context(), n)
				if err != nil {
					return err
				}
				out = append(out, res)
			}
			return a.out(out, func(w io.Writer) {
				for _, r := range out {
					fmt.Fprintf(w, "removed %s (%d version(s)): %d file(s) deleted (%s), %d kept (used by another dataset or a LoRA)\n",
						r.Removed[0].Name, len(r.Removed), r.BlobsRemoved, humanBytes(r.BytesFreed), r.BlobsKept)
				}
			})
		},
	}
}

func (a *app) datasetExport() *cobra.Command {
	return &cobra.Command{
		Use:   "export NAME[@VERSION] DIR",
		Short: "Write a dataset version's files into a new folder (atomically; every file checked against its sha256)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dl, err := a.datasets()
			if err != nil {
				return err
			}
			if _, err := os.Lstat(args[1]); err == nil {
				return withCode(ExitRefused, fmt.Errorf("%s exists: export writes a new folder", args[1]))
			}
			res, err := dl.Export(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			return a.out(res, func(w io.Writer) {
				fmt.Fprintf(w, "exported %s version %d to %s: %d file(s), %s, sha256-verified\n", res.Dataset.Name, res.Dataset.Version, res.Dir, res.Files, humanBytes(res.Bytes))
			})
		},
	}
}

// libraryDataset returns the version a `train init --dataset` value names when it is a
// library dataset and not a folder here (ok false otherwise).
func (a *app) libraryDataset(ctx context.Context, arg string) (store.Dataset, bool, error) {
	if fi, err := os.Stat(arg); err == nil && fi.IsDir() {
		return store.Dataset{}, false, nil
	}
	if _, err := datasetlib.ParseRef(arg); err != nil {
		return store.Dataset{}, false, nil
	}
	dl, err := a.datasets()
	if err != nil {
		return store.Dataset{}, false, err
	}
	d, _, err := dl.Get(ctx, arg)
	if errors.Is(err, store.ErrNotFound) {
		return d, false, nil
	}
	return d, err == nil, err
}

var notJobName = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// jobNameFor makes an ai-toolkit job name from a dataset name.
func jobNameFor(name string) string {
	s := notJobName.ReplaceAllString(name, "_")
	if len(s) > 64 {
		s = s[:64]
	}
	if s == "" || s == "_" {
		return "lora"
	}
	return s
}

// datasetLabel names the library dataset versions whose id is sha ("" when none).
func (a *app) datasetLabel(ctx context.Context, sha string) string {
	if sha == "" {
		return ""
	}
	dl, err := a.datasets()
	if err != nil {
		return ""
	}
	ds, err := dl.Store.DatasetsByManifest(ctx, sha)
	if err != nil || len(ds) == 0 {
		return ""
	}
	return fmt.Sprintf("%s@%d", ds[len(ds)-1].Name, ds[len(ds)-1].Version)
}
