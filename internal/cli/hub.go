package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/hub/hf"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/units"
)

func (a *app) hubCmd() *cobra.Command {
	cmd := group(&cobra.Command{Use: "hub", Short: "Pull from Hugging Face and CivitAI, push to Hugging Face, identify and search"})
	cmd.AddCommand(a.hubPullCmd(), a.hubPushCmd(), a.hubIdentifyCmd(), a.hubSearchCmd())
	return cmd
}

// pulled is one file a hub pull placed, with its library entry when it is a Wan LoRA.
type pulled struct {
	Source  string      `json:"source"` // huggingface | civitai
	Path    string      `json:"path"`   // path in the repo, or the file name
	Size    int64       `json:"size"`
	SHA256  string      `json:"sha256,omitempty"`
	Cached  string      `json:"cache_path"`
	Fetched bool        `json:"downloaded"`
	LoRA    *store.LoRA `json:"lora,omitempty"`
	Note    string      `json:"note,omitempty"`
}

func (a *app) hubPullCmd() *cobra.Command {
	var opt hf.PullOptions
	var conns int
	var chunk string
	var name string
	var allowHTTP bool
	cmd := &cobra.Command{
		Use:   "pull hf://ORG/REPO[@REV][/PATH…] | civitai:VERSION_ID | https://civitai.com/models/ID…",
		Short: "Download into the Hugging Face cache (or the library for CivitAI); Wan LoRAs enter the library",
		Long: "Hugging Face files land in the real huggingface_hub cache (HF_HUB_CACHE), so transformers,\n" +
			"diffusers and Scope reuse them offline; LoRA files enter the library by reference to the\n" +
			"cache blob, with repo, revision, commit and path as origin. Downloads are parallel ranged\n" +
			"requests, resume after an interruption and are checked against the LFS sha256.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			lib, err := a.library()
			if err != nil {
				return err
			}
			if name != "" && len(args) != 1 {
				return usageError("--name needs exactly one reference")
			}
			var chunkSize int64
			if chunk != "" {
				if chunkSize, err = units.ParseSize(chunk); err != nil || chunkSize < hf.MinChunkSize {
					return usageError("--chunk-size %q: expected a size of at least %s, e.g. 16M", chunk, humanBytes(hf.MinChunkSize))
				}
			}
			if conns < 0 || conns > hf.MaxConnections {
				return usageError("--connections %d: expected 1 to %d", conns, hf.MaxConnections)
			}
			var all []pulled
			for _, arg := range args {
				var got []pulled
				switch {
				case isHF(arg):
					got, err = a.pullHF(cmd.Context(), lib, arg, opt, hfConns{conns, chunkSize}, name, allowHTTP)
				default:
					got, err = a.pullCivitAI(cmd.Context(), lib, arg, name)
				}
				all = append(all, got...)
				if err != nil {
					a.out(map[string]any{"files": nonNilP(all)}, func(io.Writer) {})
					return err
				}
			}
			return a.out(map[string]any{"files": nonNilP(all)}, func(w io.Writer) {
				for _, p := range all {
					verb := "cached "
					if p.Fetched {
						verb = "fetched"
					}
					line := fmt.Sprintf("%s %s (%s) → %s", verb, p.Path, humanBytes(p.Size), p.Cached)
					if p.LoRA != nil {
						line += fmt.Sprintf("; library: %s (%s)", p.LoRA.Name, p.LoRA.Base)
					}
					fmt.Fprintln(w, line)
					if p.Note != "" {
						fmt.Fprintln(w, "  note: "+p.Note)
					}
				}
			})
		},
	}
	cmd.Flags().StringSliceVar(&opt.Include, "include", nil, "only files matching these globs (huggingface_hub allow_patterns)")
	cmd.Flags().StringSliceVar(&opt.Exclude, "exclude", nil, "skip files matching these globs")
	cmd.Flags().IntVar(&conns, "connections", 0, "parallel ranged requests per file (default 8)")
	cmd.Flags().StringVar(&chunk, "chunk-size", "", "range size for large files, e.g. 16M (default 16MiB; also the resume granularity)")
	cmd.Flags().StringVar(&name, "name", "", "library name for the LoRA (default: its file name)")
	cmd.Flags().BoolVar(&allowHTTP, "allow-http", false, "allow a plain http:// HF_ENDPOINT (and CDN) on a non-loopback host (benchmarks and test networks only: traffic, token included, is not encrypted)")
	return cmd
}

func nonNilP(p []pulled) []pulled {
	if p == nil {
		return []pulled{}
	}
	return p
}

func isHF(s string) bool {
	if strings.Contains(s, "civitai") {
		return false
	}
	return strings.HasPrefix(s, "hf://") || strings.Contains(s, "huggingface.co/") || (!strings.Contains(s, ":") && strings.Count(s, "/") >= 1)
}

// hfConns are hub pull's --connections and --chunk-size.
type hfConns struct {
	n     int
	chunk int64
}

func (a *app) pullHF(ctx context.Context, lib *library.Library, arg string, opt hf.PullOptions, conns hfConns, name string, allowHTTP bool) ([]pulled, error) {
	ref, err := hf.ParseRef(arg)
	if err != nil {
		return nil, usageError("%v", err)
	}
	c := &hf.Client{Endpoint: a.cfg.HFEndpoint, Token: hf.TokenFrom(a.cfg.HFToken, a.cfg.HFHome), Connections: conns.n, ChunkSize: conns.chunk, Progress: a.reporter(), AllowInsecureHTTP: allowHTTP}
	files, err := c.Pull(ctx, a.cfg.HFHubCache, ref, opt)
	var out []pulled
	for _, f := range files {
		p := pulled{Source: "huggingface", Path: f.Path, Size: f.Size, SHA256: f.SHA256, Cached: f.CachePath, Fetched: f.Downloaded}
		if strings.HasSuffix(f.Path, ".safetensors") {
			n := name
			if n == "" {
				n = strings.TrimSuffix(path.Base(f.Path), ".safetensors")
			}
			origin := store.Origin{Kind: "huggingface", Repo: ref.Repo, Revision: ref.Revision, Commit: f.Commit, File: f.Path,
				URL: strings.TrimSuffix(a.cfg.HFEndpoint, "/") + "/" + ref.Repo}
			res, aerr := lib.Add(ctx, f.BlobPath, library.AddOptions{Name: n, Origin: origin, InPlace: true})
			switch {
			case aerr == nil:
				p.LoRA = &res.LoRA
			case errors.Is(aerr, library.ErrNotLoRA):
				p.Note = "not a Wan LoRA; kept in the cache only"
			default:
				p.Note = "not added to the library: " + aerr.Error()
			}
		}
		out = append(out, p)
	}
	return out, err
}

func (a *app) hubPushCmd() *cobra.Command {
	var opt hf.PushOptions
	var trigger []string
	var trainingConfig string
	var allowHTTP bool
	cmd := &cobra.Command{
		Use:   "push LORA hf://ORG/REPO[/PATH]",
		Short: "Upload a library LoRA to Hugging Face (preupload, LFS, commit) with a model card",
		Long: "Uploads through the Hub's real protocol: preupload, the LFS batch API (objects the Hub\n" +
			"already has are not sent again) and a commit. The model card records base model, rank,\n" +
			"alpha, targets, trigger words and the training config when known. HF_TOKEN needs write access.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			lib, err := a.library()
			if err != nil {
				return err
			}
			e, err := lib.Store.GetLoRA(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			ref, err := hf.ParseRef(args[1])
			if err != nil {
				return usageError("%v", err)
			}
			dest := path.Base(e.Name) + ".safetensors"
			if len(ref.Paths) == 1 {
				dest = ref.Paths[0]
				if !strings.HasSuffix(dest, ".safetensors") {
					dest = path.Join(dest, e.Name+".safetensors")
				}
			}
			var rep lora.Report
			_ = json.Unmarshal(e.Info, &rep)
			info := hf.ModelCardInfo{Name: e.Name, Base: e.Base, Rank: e.Rank, Targets: rep.Modules, SHA256: e.SHA256, TrainingConfig: trainingConfig}
			if rep.Alpha != nil {
				info.Alpha = *rep.Alpha
			}
			info.TriggerWords = trigger
			for _, o := range e.Origins {
				if len(info.TriggerWords) == 0 && o.TriggerWords != "" {
					info.TriggerWords = strings.Split(o.TriggerWords, ", ")
				}
			}
			if trainingConfig != "" {
				b, err := os.ReadFile(trainingConfig)
				if err != nil {
					return err
				}
				info.TrainingConfig = string(b)
			}
			opt.ModelCard = hf.ModelCard(info)
			c := &hf.Client{Endpoint: a.cfg.HFEndpoint, Token: hf.TokenFrom(a.cfg.HFToken, a.cfg.HFHome), Progress: a.reporter(), AllowInsecureHTTP: allowHTTP}
			if !c.Token.IsSet() {
				return usageError("set HF_TOKEN (a token with write access) or log in with `hf auth login`")
			}
			res, err := c.Push(cmd.Context(), ref.Repo, []hf.Upload{{Path: dest, Local: e.Path}}, opt)
			if err != nil {
				return err
			}
			return a.out(res, func(w io.Writer) {
				fmt.Fprintf(w, "pushed to %s at commit %.12s\n", res.URL, res.Commit)
				for _, f := range res.Files {
					state := "uploaded"
					if !f.Uploaded {
						state = "already on the Hub"
					}
					fmt.Fprintf(w, "  %s (%s, %s)\n", f.Path, humanBytes(f.Size), state)
				}
			})
		},
	}
	cmd.Flags().BoolVar(&opt.Create, "create", false, "create the repo if it does not exist")
	cmd.Flags().BoolVar(&opt.Private, "private", false, "with --create: make the new repo private")
	cmd.Flags().StringVar(&opt.Message, "message", "", "commit message")
	cmd.Flags().StringSliceVar(&trigger, "trigger", nil, "trigger words for the model card (default: from the CivitAI origin)")
	cmd.Flags().StringVar(&trainingConfig, "training-config", "", "ai-toolkit config file to quote in the model card")
	cmd.Flags().BoolVar(&allowHTTP, "allow-http", false, "allow a plain http:// HF_ENDPOINT that is not loopback (test networks only)")
	return cmd
}
