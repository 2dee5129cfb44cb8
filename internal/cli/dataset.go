package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/aitk"
	"github.com/daydreamlive/scopectl/internal/dataset"
	"github.com/daydreamlive/scopectl/internal/dataset/datasetlib"
	"github.com/daydreamlive/scopectl/internal/train"
)

func (a *app) datasetCmd() *cobra.Command {
	cmd := group(&cobra.Command{Use: "dataset", Short: "Check training datasets the way ai-toolkit reads them, and keep them in the library"})
	cmd.AddCommand(a.datasetCheckCmd())
	cmd.AddCommand(a.datasetLibCmds()...)
	return cmd
}

func (a *app) datasetCheckCmd() *cobra.Command {
	var (
		cfgPath string
		index   int
		o       = dataset.DefaultOptions()
		res     []int
	)
	cmd := &cobra.Command{
		Use:   "check [DIR|NAME[@VERSION]] [--config CFG]",
		Short: "Report what ai-toolkit will train from a folder, before a GPU is paid for",
		Long: `Reads every file in DIR the way ai-toolkit will: which media it takes and skips, each clip's
frames, fps and duration from its container (built-in MP4/MOV reader; ffprobe for other
containers when on PATH), the frames ai-toolkit samples and Wan's VAE drops, the bucket of each
item per resolution, captions and trigger words, duplicates, damaged media, the epochs the steps
buy and the disk the latent cache needs.

Settings come from an ai-toolkit job config (--config: config.process[0].datasets[N], train,
model) or from ai-toolkit's defaults; flags override both. DIR defaults to the dataset's
folder_path; a library dataset (dataset add) is checked by its NAME[@VERSION]. Exits 1 when training would fail, skip an item, or silently change what is trained
(errors, and warnings marked "changes training"), 0 otherwise.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := o
			dir := ""
			if cfgPath != "" {
				c, folder, err := optionsFromConfig(cfgPath, index)
				if err != nil {
					return usageError("--config %s: %v", cfgPath, err)
				}
				opts, dir = c, folder
			}
			// flags given on the command line win over the config
			f := cmd.Flags()
			set := func(name string, apply func()) {
				if f.Changed(name) {
					apply()
				}
			}
			set("num-frames", func() { opts.NumFrames = o.NumFrames })
			set("resolution", func() { opts.Resolutions = res })
			set("arch", func() { opts.Arch = o.Arch })
			set("fps", func() { opts.FPS = o.FPS })
			set("trigger-word", func() { opts.TriggerWord = o.TriggerWord })
			set("caption-ext", func() { opts.CaptionExt = o.CaptionExt })
			set("steps", func() { opts.Steps = o.Steps })
			set("batch-size", func() { opts.BatchSize = o.BatchSize })
			set("num-repeats", func() { opts.NumRepeats = o.NumRepeats })
			set("probe", func() { opts.VideoProbe = o.VideoProbe })
			if len(args) == 1 {
				dir = args[0]
			}
			if dir == "" {
				return usageError("give a dataset folder, or a --config whose dataset has folder_path")
			}
			var rep *dataset.Report
			ds, inLib, err := a.libraryDataset(cmd.Context(), dir)
			if err == nil && inLib {
				// a library dataset (dataset add), read from its blobs
				var dl *datasetlib.Lib
				if dl, err = a.datasets(); err == nil {
					rep, err = dl.Check(cmd.Context(), fmt.Sprintf("%s@%d", ds.Name, ds.Version), opts)
				}
			} else if err == nil {
				rep, err = dataset.Check(cmd.Context(), dir, opts)
			}
			if err != nil {
				return err
			}
			if err := a.out(rep, func(w io.Writer) { renderDatasetReport(w, rep) }); err != nil {
				return err
			}
			if rep.Fail {
				return withCode(ExitFailure, errSilent)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfgPath, "config", "", "ai-toolkit job config (YAML or JSON) to read the dataset, train and model settings from")
	fl.IntVar(&index, "dataset", 0, "which entry of the config's datasets list to check")
	fl.IntVar(&o.NumFrames, "num-frames", o.NumFrames, "frames per clip (num_frames; 1 = an image dataset)")
	fl.IntSliceVar(&res, "resolution", o.Resolutions, "bucket resolutions (resolution list)")
	fl.StringVar(&o.Arch, "arch", o.Arch, "model arch: wan21, wan21_i2v, wan22_14b, wan22_14b_i2v, wan22_5b")
	fl.IntVar(&o.FPS, "fps", o.FPS, "dataset fps (used by auto_frame_count and shrink_video_to_frames=false)")
	fl.StringVar(&o.TriggerWord, "trigger-word", "", "trigger word")
	fl.StringVar(&o.CaptionExt, "caption-ext", o.CaptionExt, "caption file extension")
	fl.IntVar(&o.Steps, "steps", o.Steps, "training steps (for the epoch estimate)")
	fl.IntVar(&o.BatchSize, "batch-size", o.BatchSize, "batch size")
	fl.IntVar(&o.NumRepeats, "num-repeats", o.NumRepeats, "dataset num_repeats")
	fl.StringVar(&o.VideoProbe, "probe", o.VideoProbe, "video metadata reader: auto, builtin or ffprobe")
	return cmd
}

func renderDatasetReport(w io.Writer, r *dataset.Report) {
	o := r.Options
	mode := "image dataset"
	if o.IsVideo() {
		mode = fmt.Sprintf("video dataset, num_frames %d", o.NumFrames)
		if o.AutoFrameCount {
			mode = fmt.Sprintf("video dataset, auto_frame_count at %d fps", o.FPS)
		}
	}
	fmt.Fprintf(w, "%s: %s, arch %s, resolution %v\n", r.Dir, mode, o.Arch, o.Resolutions)
	if len(r.VideoProbe) > 0 {
		fmt.Fprintf(w, "video metadata from: %s\n", strings.Join(r.VideoProbe, ", "))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nPATH\tKIND\tSIZE\tFRAMES\tFPS\tSECONDS\tBUCKET\tCAPTION")
	for _, it := range r.Items {
		size, frames, fps, secs, bucket, capt := "-", "-", "-", "-", "-", "-"
		if it.Width > 0 {
			size = fmt.Sprintf("%dx%d", it.Width, it.Height)
		}
		if it.Frames > 0 {
			frames = fmt.Sprint(it.Frames)
			if it.Plan != nil && (it.Plan.NumFrames != it.Frames || it.Plan.Dropped > 0) {
				frames = fmt.Sprintf("%d→%d", it.Frames, it.Plan.Used)
			}
			fps, secs = fmt.Sprintf("%.3g", it.FPS), fmt.Sprintf("%.2f", it.Duration)
		}
		var bs []string
		for _, b := range it.Buckets {
			bs = append(bs, b.Key(o.IsVideo()))
		}
		if len(bs) > 0 {
			bucket = strings.Join(bs, " ")
		}
		if it.Caption != nil {
			capt = it.Caption.Status
			if it.Caption.Ignored {
				capt += " (ignored)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", it.Path, it.Kind, size, frames, fps, secs, bucket, capt)
	}
	tw.Flush()
	printFindings := func(prefix string, fs []dataset.Finding) {
		for _, f := range fs {
			tag := string(f.Severity)
			if f.Changes {
				tag += ", changes training"
			}
			fmt.Fprintf(w, "  %s[%s] %s: %s\n", prefix, tag, f.Code, f.Message)
		}
	}
	found := len(r.Findings) > 0
	for _, it := range r.Items {
		if len(it.Findings) > 0 {
			found = true
		}
	}
	if found {
		fmt.Fprintln(w, "\nfindings:")
		printFindings("", r.Findings)
		for _, it := range r.Items {
			printFindings(it.Path+" ", it.Findings)
		}
	}
	t := r.Totals
	fmt.Fprintf(w, "\n%d media file(s): %d video, %d image, %d skipped; %d will train (%.1fs of video)\n", t.Files, t.Videos, t.Images, t.Skipped, t.Trained, t.VideoSeconds)
	for _, b := range t.Buckets {
		fmt.Fprintf(w, "  bucket %d %s: %d item(s), %d batch(es)\n", b.Resolution, b.Key, b.Items, b.Batches)
	}
	if t.BatchesPerEpoch > 0 {
		fmt.Fprintf(w, "%d batches per epoch; %d steps × %d accumulation ≈ %.1f epochs (batch %d, repeats %d)\n", t.BatchesPerEpoch, o.Steps, o.GradAccum, t.Epochs, o.BatchSize, o.NumRepeats)
	}
	if t.LatentCacheFiles > 0 {
		fmt.Fprintf(w, "latent cache: ~%.1f MiB in %d file(s)\n", float64(t.LatentCacheBytes)/(1<<20), t.LatentCacheFiles)
	}
	verdict := "OK"
	if r.Fail {
		verdict = "FAIL (errors, or warnings that change training)"
	}
	fmt.Fprintf(w, "%d error(s), %d warning(s), %d note(s): %s\n", t.Errors, t.Warnings, t.Infos, verdict)
}

// optionsFromConfig reads config.process[0].datasets[index] of an ai-toolkit job config
// as run.py does (internal/aitk: YAML or JSON, ${VAR} from the environment, an unset one
// an error) into dataset.Options (train.DatasetOptions), and returns the dataset's folder.
func optionsFromConfig(path string, index int) (dataset.Options, string, error) {
	cfg, err := aitk.ReadFile(path, aitk.ParseOptions{Expand: true})
	if err != nil {
		return dataset.DefaultOptions(), "", err
	}
	if len(cfg.Config.Process) == 0 {
		return dataset.DefaultOptions(), "", fmt.Errorf("no config.process entry")
	}
	p := &cfg.Config.Process[0]
	if index < 0 || index >= len(p.Datasets) {
		return dataset.DefaultOptions(), "", fmt.Errorf("dataset %d: the config has %d", index, len(p.Datasets))
	}
	d := p.Datasets[index]
	folder := d.FolderPath
	if folder == "" {
		folder = d.DatasetPath
	}
	return train.DatasetOptions(p, d), folder, nil
}
