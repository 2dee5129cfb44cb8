package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lorasync"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/store"
)

func (a *app) loraCmd() *cobra.Command {
	cmd := group(&cobra.Command{Use: "lora", Short: "Inspect, convert and manage Wan LoRAs in the library and Scope's LoRA dir"})
	cmd.AddCommand(a.loraInspect(), a.loraConvert(), a.loraAdd(), a.loraScan(), a.loraLs(), a.loraShow(),
		a.loraRm(), a.loraVerify(), a.loraInstall(), a.loraUninstall())
	return cmd
}

func (a *app) loraInspect() *cobra.Command {
	var noHash bool
	cmd := &cobra.Command{
		Use:   "inspect FILE...",
		Short: "Report family, base model, rank, alpha, targets and anything unusual of LoRA files",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			var reps []*lora.Report
			var firstErr error
			code := ExitNotFound // 4 when every failure is a missing file, else 1
			for _, p := range args {
				r, err := lora.Inspect(p, lora.InspectOptions{Hash: !noHash})
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
					if exitCode(err) != ExitNotFound {
						code = ExitFailure
					}
					if !a.json {
						fmt.Fprintln(a.stderr, errPrefix("lora inspect")+err.Error())
					}
					continue
				}
				reps = append(reps, r)
			}
			if reps == nil {
				reps = []*lora.Report{}
			}
			if err := a.out(reps, func(w io.Writer) {
				for i, r := range reps {
					if i > 0 {
						fmt.Fprintln(w)
					}
					printReport(w, r)
				}
			}); err != nil {
				return err
			}
			if firstErr != nil && len(args) == 1 && a.json {
				return withCode(code, firstErr)
			}
			if firstErr != nil {
				return withCode(code, errSilent)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&noHash, "no-hash", false, "read only the header (skip the sha256 of the whole file)")
	return cmd
}

func printReport(w io.Writer, r *lora.Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, f string, v ...any) { fmt.Fprintf(tw, "%s:\t"+f+"\n", append([]any{k}, v...)...) }
	row("file", "%s", r.Path)
	kind := r.Kind
	if r.Model != "" {
		kind += " (" + r.Model + ")"
	}
	row("kind", "%s", kind)
	row("family", "%s", r.Family)
	row("base", "%s (%s)", r.Base, r.BaseReason)
	if r.Kind == "wan-lora" {
		ranks := ""
		if r.Ranks != nil {
			ranks = " (differs per module; see --json)"
		}
		row("rank", "%d%s", r.Rank, ranks)
		if r.Alpha != nil {
			row("alpha", "%g (%s, scale %g)", *r.Alpha, r.AlphaFrom, *r.Alpha/float64(r.Rank))
		} else {
			row("alpha", "differs per module (%s; see --json)", r.AlphaFrom)
		}
		row("targets", "%s", strings.Join(r.Targets, ", "))
		row("modules", "%s", strings.Join(r.Modules, ", "))
		row("layers", "%d", r.Layers)
	}
	row("dtype", "%s", r.DType)
	row("tensors", "%d", r.Tensors)
	row("params", "%d", r.Params)
	row("bytes", "%d", r.Bytes)
	if r.SHA256 != "" {
		row("sha256", "%s", r.SHA256)
	}
	keys := make([]string, 0, len(r.Metadata))
	for k := range r.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := r.Metadata[k]
		if len(v) > 80 {
			v = v[:77] + "..."
		}
		row("metadata."+k, "%s", strings.ReplaceAll(v, "\n", " "))
	}
	for _, u := range r.Unusual {
		row("unusual", "%s", u)
	}
	for _, p := range r.Problems {
		row("problem", "%s", p)
	}
	if r.ScopeReady {
		row("scope", "loads as trained")
	} else {
		row("scope", "needs `scopectl lora install`: %s", strings.Join(r.ScopeIssues, "; "))
	}
	tw.Flush()
}

func (a *app) loraConvert() *cobra.Command {
	var to, out string
	var fold, force bool
	cmd := &cobra.Command{
		Use:   "convert FILE|NAME --to diffusers|comfy|kohya -o OUT",
		Short: "Convert a LoRA (a file, or a library entry by name or sha256) between key families, copying tensors bit for bit",
		Long: "Tensors are copied bit for bit and alpha is carried: as alpha keys (comfy, kohya) or in\n" +
			"diffusers' lora_adapter_metadata. --fold-alpha multiplies B by alpha/rank instead.\n" +
			"The input is a .safetensors file, or else the library entry of that name or sha256.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fam, ok := lora.ParseFamily(to)
			if !ok {
				return usageError("--to %q: expected diffusers, comfy or kohya", to)
			}
			if out == "" {
				return usageError("-o OUT is required")
			}
			in, err := a.loraInput(cmd, args[0])
			if err != nil {
				return err
			}
			args[0] = in
			if sameFile(args[0], out) {
				return usageError("-o %s: output must differ from the input", out)
			}
			if _, err := os.Stat(out); err == nil && !force {
				return withCode(ExitRefused, fmt.Errorf("%s exists (use --force to replace it)", out))
			}
			var size int64
			if fi, err := os.Stat(args[0]); err == nil {
				size = fi.Size()
			}
			t := a.progress().Start("convert", filepath.Base(args[0]), size)
			res, err := lora.ConvertFile(args[0], out, lora.ConvertOptions{To: fam, FoldAlpha: fold, Progress: t})
			t.Finish()
			if err != nil {
				return err
			}
			return a.out(res, func(w io.Writer) {
				fmt.Fprintf(w, "converted %s (%s) → %s (%s): %s, %s, sha256 %s\n", args[0], res.From, out, res.To, plural(res.Tensors, "tensor"), plural(int(res.Bytes), "byte"), res.SHA256)
				for _, n := range res.Notes {
					fmt.Fprintln(w, "note: "+n)
				}
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "target family: diffusers, comfy (ai-toolkit/ComfyUI) or kohya")
	cmd.Flags().StringVarP(&out, "output", "o", "", "output .safetensors file")
	cmd.Flags().BoolVar(&fold, "fold-alpha", false, "fold alpha/rank into lora_B (written as F32) instead of carrying alpha")
	cmd.Flags().BoolVar(&force, "force", false, "replace OUT if it exists")
	return cmd
}

// loraInput resolves a command's input: an existing file as given, or else the library
// entry of that name or sha256 (its file). Neither is a not-found error naming both.
func (a *app) loraInput(cmd *cobra.Command, ref string) (string, error) {
	if _, err := os.Stat(ref); !errors.Is(err, fs.ErrNotExist) {
		return ref, nil // a file (or an error lora reads will report)
	}
	if strings.ContainsRune(ref, os.PathSeparator) || strings.HasSuffix(ref, ".safetensors") {
		return "", withCode(ExitNotFound, fmt.Errorf("%s: no such file", ref))
	}
	lib, err := a.library()
	if err != nil {
		return "", err
	}
	e, err := lib.Store.GetLoRA(cmd.Context(), ref)
	if errors.Is(err, store.ErrNotFound) {
		return "", withCode(ExitNotFound, fmt.Errorf("%s: no such file, and no library entry of that name or sha256 (see scopectl lora ls)", ref))
	}
	if err != nil {
		return "", err
	}
	return e.Path, nil
}

func sameFile(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

func (a *app) loraAdd() *cobra.Command {
	var name string
	var link bool
	cmd := &cobra.Command{
		Use:   "add FILE|DIR...",
		Short: "Import LoRAs into the content-addressed library (same content = one entry)",
		Long: "The library keeps its own bytes: a reflink where the filesystem can share extents\n" +
			"copy-on-write (btrfs, XFS), else a copy verified against the sha256, written atomically,\n" +
			"so that editing or deleting FILE afterwards leaves the entry intact. --link stores a\n" +
			"hardlink instead (no second copy on disk; editing FILE in place then damages the entry).\n" +
			"Adding the content of a damaged entry again restores it.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			lib, err := a.library()
			if err != nil {
				return err
			}
			files, err := expandFiles(args)
			if err != nil {
				return err
			}
			if len(files) == 0 {
				return withCode(ExitNotFound, fmt.Errorf("no .safetensors files found in %s", strings.Join(args, ", ")))
			}
			if name != "" && len(files) != 1 {
				return usageError("--name needs exactly one file (got %d)", len(files))
			}
			results := []*library.AddResult{}
			var failed []string
			for _, f := range files {
				r, err := lib.Add(cmd.Context(), f, library.AddOptions{Name: name, Link: link})
				if err != nil {
					failed = append(failed, err.Error())
					if !a.json {
						fmt.Fprintln(a.stderr, "scopectl: "+err.Error())
					}
					continue
				}
				results = append(results, r)
			}
			if err := a.out(map[string]any{"results": results, "errors": nonNil(failed)}, func(w io.Writer) {
				for _, r := range results {
					fmt.Fprintf(w, "%-7s %s  %s  %s  (%s)\n", r.Status, r.LoRA.Name, r.LoRA.Base, r.LoRA.SHA256[:12], addHow(r))
					if r.Note != "" {
						fmt.Fprintln(w, "  note: "+r.Note)
					}
				}
			}); err != nil {
				return err
			}
			if len(failed) > 0 {
				return withCode(ExitFailure, errSilent)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "entry name (default: file name without .safetensors)")
	cmd.Flags().BoolVar(&link, "link", false, "store a hardlink to FILE instead of a copy the library owns (editing FILE then damages the entry)")
	return cmd
}

// addHow says in words how lora add stored a file.
func addHow(r *library.AddResult) string {
	switch r.Method {
	case "none":
		return "already in the library; nothing copied"
	case "indexed":
		return "indexed in place"
	}
	return r.Method
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// expandFiles turns DIR arguments into the .safetensors files below them; files are
// passed through as given, so that a pickle file named explicitly gets its explanation.
func expandFiles(args []string) ([]string, error) {
	var out []string
	for _, p := range args {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			out = append(out, p)
			continue
		}
		err = filepath.WalkDir(p, func(q string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && d.Type().IsRegular() && strings.HasSuffix(d.Name(), ".safetensors") && !strings.HasPrefix(d.Name(), ".") {
				out = append(out, q)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (a *app) loraScan() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "scan [DIR|FILE]",
		Short: "Index the LoRAs in a folder where they lie (default: Scope's LoRA dir), then list the library",
		Long: "Indexes each .safetensors file in place (no copy) and reports it as new, updated (the\n" +
			"file of an entry now holds other content: the entry follows it), known (content the\n" +
			"library has, or a file scopectl installed), unchanged, or skipped with the reason.\n" +
			"A file whose size, mtime and inode are those it had when scopectl last read it is not\n" +
			"read again. A new file whose name is taken by other content is named NAME-<8 hex digits\n" +
			"of its sha256>; scanning that one FILE with --name chooses the name instead.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := a.cfg.LoRADir
			if len(args) == 1 {
				dir = args[0]
			}
			if name != "" {
				if fi, err := os.Stat(dir); len(args) == 0 || (err == nil && fi.IsDir()) {
					return usageError("--name needs one FILE to scan, not a folder")
				}
			}
			lib, err := a.library()
			if err != nil {
				return err
			}
			res := &library.ScanResult{Files: []library.ScanFile{}, Indexed: []*library.AddResult{}, Counts: map[string]int{}}
			note := ""
			if _, err := os.Stat(dir); err != nil {
				if len(args) == 1 {
					return fmt.Errorf("%s: %w", dir, err)
				}
				note = fmt.Sprintf("Scope's LoRA dir %s does not exist yet (set SCOPE_LORA_DIR or --lora-dir)", dir)
			} else if res, err = lib.Scan(cmd.Context(), dir, library.ScanOptions{Name: name}); err != nil {
				return err
			}
			all, err := lib.Store.ListLoRAs(cmd.Context(), store.Filter{})
			if err != nil {
				return err
			}
			skips := []string{}
			for _, f := range res.Files {
				if f.Status == "skipped" {
					skips = append(skips, f.Reason)
				}
			}
			c := res.Counts
			return a.out(map[string]any{"dir": dir, "files": res.Files, "counts": c, "indexed": res.Indexed, "skipped": skips, "library": nonNilL(all), "note": note}, func(w io.Writer) {
				if note != "" {
					fmt.Fprintln(w, note)
				} else {
					fmt.Fprintf(w, "scanned %s: %d new, %d updated, %d known, %d unchanged, %d skipped (%s read in full)\n",
						dir, c["new"], c["updated"], c["known"], c["unchanged"], c["skipped"], plural(c["hashed"], "file"))
				}
				for _, f := range res.Files {
					if f.Status == "unchanged" {
						continue
					}
					line := fmt.Sprintf("%-8s %s", f.Status, f.Path)
					if f.Name != "" && f.Status != "skipped" {
						line += " → " + f.Name
					}
					if f.Reason != "" {
						line += "  (" + f.Reason + ")"
					}
					fmt.Fprintln(w, line)
				}
				fmt.Fprintf(w, "library (%s): %s\n", a.cfg.DataDir, plural(len(all), "LoRA"))
				printTable(w, all)
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "entry name for the one FILE scanned (default: file name without .safetensors)")
	return cmd
}

func nonNilL(l []store.LoRA) []store.LoRA {
	if l == nil {
		return []store.LoRA{}
	}
	return l
}

func printTable(w io.Writer, ls []store.LoRA) {
	if len(ls) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tBASE\tFAMILY\tRANK\tSIZE\tSHA256\tSTORED")
	for _, l := range ls {
		stored := "library"
		if !l.Managed {
			stored = "in place"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%.12s\t%s\n", l.Name, l.Base, l.Family, l.Rank, humanBytes(l.Size), l.SHA256, stored)
	}
	tw.Flush()
}

func humanBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}

func (a *app) loraLs() *cobra.Command {
	var f store.Filter
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the library",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.Base != "" && !slices.Contains(knownBases, f.Base) {
				return usageError("--base %q: expected one of %s", f.Base, strings.Join(knownBases, ", "))
			}
			if f.Family != "" {
				fam, ok := lora.ParseFamily(f.Family)
				if !ok {
					return usageError("--family %q: expected diffusers, comfy or kohya", f.Family)
				}
				f.Family = string(fam)
			}
			lib, err := a.library()
			if err != nil {
				return err
			}
			ls, err := lib.Store.ListLoRAs(cmd.Context(), f)
			if err != nil {
				return err
			}
			return a.out(nonNilL(ls), func(w io.Writer) {
				if len(ls) == 0 {
					fmt.Fprintln(w, "no LoRAs (add some with `scopectl lora add FILE` or `scopectl lora scan DIR`)")
				}
				printTable(w, ls)
			})
		},
	}
	cmd.Flags().StringVar(&f.Base, "base", "", "only this base model (wan2.1-t2v-14b, wan2.1-t2v-1.3b, wan2.1-i2v-14b, unknown)")
	cmd.Flags().StringVar(&f.Family, "family", "", "only this key family (diffusers, comfy, kohya)")
	cmd.Flags().StringVar(&f.Name, "name", "", "only names containing this (or matching this glob)")
	return cmd
}

// knownBases are the base model ids the library records.
var knownBases = []string{lora.BaseT2V14B, lora.BaseT2V1_3B, lora.BaseI2V14B, lora.BaseUnknown}

func (a *app) loraShow() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME|SHA",
		Short: "Show one library entry: origins, installs and its full inspection",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			lib, err := a.library()
			if err != nil {
				return err
			}
			e, err := lib.Store.GetLoRA(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			all, err := lib.Installs(cmd.Context(), a.cfg.LoRADir)
			if err != nil {
				return err
			}
			installs := []store.Install{}
			for _, in := range all {
				if in.SourceSHA256 == e.SHA256 {
					installs = append(installs, in)
				}
			}
			samples, err := lib.Store.ListSamples(cmd.Context(), e.SHA256)
			if err != nil {
				return err
			}
			trained := trainingLineage(cmd.Context(), lib.Store, e.Origins)
			return a.out(map[string]any{"lora": e, "installs": installs, "samples": samples, "training": trained}, func(w io.Writer) {
				fmt.Fprintf(w, "name:     %s\nsha256:   %s\npath:     %s\nadded:    %s\n", e.Name, e.SHA256, e.Path, e.AddedAt.Format("2006-01-02 15:04:05Z07:00"))
				if e.VerifiedAt != nil {
					fmt.Fprintf(w, "verified: %s\n", e.VerifiedAt.Format("2006-01-02 15:04:05Z07:00"))
				}
				for _, o := range e.Origins {
					b, _ := json.Marshal(o)
					fmt.Fprintf(w, "origin:   %s\n", b)
				}
				for _, tr := range trained {
					line := fmt.Sprintf("trained:  job %s (%s), step %d", tr.Job, tr.Name, tr.Step)
					if tr.BaseModel != "" {
						line += ", base " + tr.BaseModel
					}
					if tr.DatasetSHA != "" {
						line += fmt.Sprintf(", dataset %.12s", tr.DatasetSHA)
						if len(tr.Datasets) > 0 {
							line += " (" + strings.Join(tr.Datasets, ", ") + ")"
						}
					}
					fmt.Fprintln(w, line)
				}
				for _, in := range installs {
					fmt.Fprintf(w, "install:  %s (%s, %s)\n", filepath.Join(in.Dir, in.File), in.Form, in.InstalledAt.Format("2006-01-02 15:04"))
				}
				for _, sm := range samples {
					fmt.Fprintf(w, "sample:   %s → %s (from %s)\n", sm.Name, sm.Path, sm.Origin)
				}
				var rep lora.Report
				if json.Unmarshal(e.Info, &rep) == nil {
					fmt.Fprintln(w)
					rep.SHA256 = e.SHA256
					printReport(w, &rep)
				}
			})
		},
	}
}

func (a *app) loraRm() *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME|SHA...",
		Short: "Remove entries from the library (files indexed in place are left alone)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			lib, err := a.library()
			if err != nil {
				return err
			}
			removed := []store.LoRA{}
			for _, ref := range args {
				e, err := lib.Remove(cmd.Context(), ref)
				if err != nil {
					return err
				}
				removed = append(removed, e)
			}
			return a.out(map[string]any{"removed": removed}, func(w io.Writer) {
				for _, e := range removed {
					fmt.Fprintf(w, "removed %s (%.12s)\n", e.Name, e.SHA256)
				}
			})
		},
	}
}

func (a *app) loraVerify() *cobra.Command {
	return &cobra.Command{
		Use:   "verify [NAME|SHA...]",
		Short: "Re-hash library files; report missing or corrupt ones and exit 1 on damage",
		RunE: func(cmd *cobra.Command, args []string) error {
			lib, err := a.library()
			if err != nil {
				return err
			}
			res, err := lib.Verify(cmd.Context(), args)
			if err != nil {
				return err
			}
			bad := 0
			for _, r := range res {
				if r.Status != "ok" {
					bad++
				}
			}
			if err := a.out(map[string]any{"results": res, "damaged": bad}, func(w io.Writer) {
				for _, r := range res {
					line := fmt.Sprintf("%-8s %s  %s", r.Status, r.Name, r.Path)
					if r.Detail != "" {
						line += "  (" + r.Detail + ")"
					}
					fmt.Fprintln(w, line)
					if r.Fix != "" {
						fmt.Fprintln(w, "  fix: "+r.Fix)
					}
				}
				fmt.Fprintf(w, "%d checked, %d damaged\n", len(res), bad)
			}); err != nil {
				return err
			}
			if bad > 0 {
				return withCode(ExitFailure, errSilent)
			}
			return nil
		},
	}
}

func (a *app) loraInstall() *cobra.Command {
	var opt library.InstallOptions
	cmd := &cobra.Command{
		Use:   "install NAME...",
		Short: "Put library LoRAs into Scope's LoRA dir, atomically, in a form Scope applies exactly",
		Long: "Writes each LoRA so that its effect in Scope equals B @ A × alpha/rank of the source:\n" +
			"diffusers keys (which Scope silently ignores) are converted, and alpha is kept in a form\n" +
			"Scope applies. Refuses a base model that does not fit --pipeline unless --force.\n" +
			"It is `scopectl sync NAME --to DIR`: the files scopectl put into DIR are recorded in\n" +
			"DIR/.scopectl-owned, so a file it did not put there is never replaced without --force.\n" +
			"Known pipelines: " + strings.Join(scope.Pipelines(), ", ") + ".",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if opt.Dir == "" {
				opt.Dir = a.cfg.LoRADir
			}
			if opt.Pipeline != "" {
				if _, ok := scope.PipelineBase[opt.Pipeline]; !ok {
					return usageError("--pipeline %q: expected one of %s", opt.Pipeline, strings.Join(scope.Pipelines(), ", "))
				}
			}
			lib, err := a.library()
			if err != nil {
				return err
			}
			results := []*library.InstallResult{}
			var firstErr error
			for _, ref := range args {
				r, err := lorasync.Install(cmd.Context(), lib, ref, opt)
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				results = append(results, r)
			}
			if err := a.out(map[string]any{"results": results}, func(w io.Writer) {
				for _, r := range results {
					fmt.Fprintf(w, "%-9s %s → %s (%s, %s)\n", r.Status, r.Name, r.Path, r.Form, r.Base)
					for _, x := range r.Warnings {
						fmt.Fprintln(w, "  note: "+x)
					}
				}
			}); err != nil {
				return err
			}
			return firstErr
		},
	}
	cmd.Flags().StringVar(&opt.Dir, "dir", "", "Scope's LoRA dir (default: the lora_dir setting)")
	cmd.Flags().StringVar(&opt.Pipeline, "pipeline", "", "Scope pipeline the LoRA is for: refuses a base model mismatch")
	cmd.Flags().BoolVar(&opt.Force, "force", false, "install despite a base mismatch, unknown base, dropped DoRA/diff tensors or a foreign file in the way")
	return cmd
}

func (a *app) loraUninstall() *cobra.Command {
	var dir string
	var force bool
	cmd := &cobra.Command{
		Use:   "uninstall NAME...",
		Short: "Remove LoRAs scopectl installed from Scope's LoRA dir (never other files)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				dir = a.cfg.LoRADir
			}
			lib, err := a.library()
			if err != nil {
				return err
			}
			removed := []library.UninstallResult{}
			var firstErr error
			for _, ref := range args {
				r, err := lorasync.Uninstall(cmd.Context(), lib, ref, dir, force)
				removed = append(removed, r...)
				if err != nil && firstErr == nil {
					firstErr = err
				}
			}
			if err := a.out(map[string]any{"removed": removed}, func(w io.Writer) {
				for _, r := range removed {
					fmt.Fprintf(w, "removed %s\n", r.Path)
				}
			}); err != nil {
				return err
			}
			if firstErr != nil && errors.Is(firstErr, store.ErrNotFound) {
				return withCode(ExitNotFound, firstErr)
			}
			return firstErr
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "Scope's LoRA dir (default: the lora_dir setting)")
	cmd.Flags().BoolVar(&force, "force", false, "remove even if the file was changed after install")
	return cmd
}

// trainedFrom is a training origin with what its job recorded: the dataset it trained
// on (its id: the manifest sha256 of its one dataset, or the hash of several) and the
// library datasets with that id.
type trainedFrom struct {
	Job        string   `json:"job"`
	Name       string   `json:"name,omitempty"`
	Step       int64    `json:"step"`
	BaseModel  string   `json:"base_model,omitempty"`
	ConfigSHA  string   `json:"config_sha256,omitempty"`
	DatasetSHA string   `json:"dataset_sha256,omitempty"`
	Datasets   []string `json:"datasets,omitempty"` // NAME@VERSION in the library
}

// trainingLineage resolves the training origins of a LoRA against the recorded jobs
// (a job no longer recorded keeps what the origin says).
func trainingLineage(ctx context.Context, st store.Store, origins []store.Origin) []trainedFrom {
	ts, _ := st.(store.TrainStore)
	ds, _ := st.(store.DatasetStore)
	var out []trainedFrom
	for _, o := range origins {
		if o.Kind != "training" || o.Job == "" {
			continue
		}
		tr := trainedFrom{Job: o.Job, Step: o.Step}
		if ts != nil {
			if j, err := ts.GetTrainJob(ctx, o.Job); err == nil {
				tr.Name, tr.BaseModel, tr.ConfigSHA, tr.DatasetSHA = j.Name, j.BaseModel, j.ConfigSHA, j.DatasetSHA
			}
		}
		if ds != nil && tr.DatasetSHA != "" {
			if l, err := ds.DatasetsByManifest(ctx, tr.DatasetSHA); err == nil {
				for _, d := range l {
					tr.Datasets = append(tr.Datasets, fmt.Sprintf("%s@%d", d.Name, d.Version))
				}
			}
		}
		out = append(out, tr)
	}
	return out
}
