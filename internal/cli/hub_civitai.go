package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/hub/civitai"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/store"
)

func (a *app) civitai() *civitai.Client {
	return &civitai.Client{BaseURL: a.cfg.CivitAIURL, Token: a.cfg.CivitAIKey, Progress: a.reporter()}
}

// pullCivitAI resolves a CivitAI reference, downloads its primary safetensors file
// (verified against the SHA256 CivitAI publishes) and adds it to the library with the
// model page, version, base model and trigger words as origin.
func (a *app) pullCivitAI(ctx context.Context, lib *library.Library, arg, name string) ([]pulled, error) {
	ref, err := civitai.ParseRef(arg)
	if err != nil {
		return nil, usageError("%s: not a Hugging Face (hf://ORG/REPO) or CivitAI (civitai:VERSION_ID, https://civitai.com/models/ID) reference: %v", arg, err)
	}
	c := a.civitai()
	v, err := c.Version(ctx, ref)
	if err != nil {
		return nil, err
	}
	f, err := c.PrimarySafetensors(v)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(a.cfg.DataDir, "incoming", "civitai")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path, err := c.Download(ctx, f, dir)
	if err != nil {
		return nil, err
	}
	origin := store.Origin{Kind: "civitai", ModelID: strconv.FormatInt(v.ModelID, 10), VersionID: strconv.FormatInt(v.ID, 10), URL: v.ModelPage, File: f.Name,
		BaseModel: v.BaseModel, TriggerWords: strings.Join(v.TrainedWords, ", ")}
	p := pulled{Source: "civitai", Path: f.Name, Size: f.SizeBytes(), SHA256: f.SHA256, Cached: path, Fetched: true}
	res, err := lib.Add(ctx, path, library.AddOptions{Name: name, Origin: origin, Link: true}) // a download removed below
	if err != nil {
		return []pulled{p}, err
	}
	os.Remove(path) // the library holds it now (hardlink or copy)
	p.Cached = res.LoRA.Path
	p.LoRA = &res.LoRA
	switch {
	case v.Base != lora.BaseUnknown && v.Base != "" && v.Base != res.LoRA.Base:
		p.Note = fmt.Sprintf("CivitAI says %q (%s) but the tensors say %s; scopectl goes by the tensors", v.BaseModel, v.Base, res.LoRA.Base)
	case v.BaseNote != "":
		p.Note = v.BaseNote
	}
	if len(v.TrainedWords) > 0 {
		p.Note += fmt.Sprintf(" trigger words: %v", v.TrainedWords)
	}
	return []pulled{p}, nil
}

func (a *app) hubIdentifyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "identify FILE",
		Short: "Look a local LoRA up on CivitAI by its sha256",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sha, err := lora.HashFile(args[0])
			if err != nil {
				return err
			}
			v, err := a.civitai().ByHash(cmd.Context(), sha)
			if err != nil {
				return err
			}
			return a.out(v, func(w io.Writer) {
				fmt.Fprintf(w, "%s — %s (model %d, version %d)\nbase: %s (%s)\npage: %s\n", v.ModelName, v.Name, v.ModelID, v.ID, v.BaseModel, v.Base, v.ModelPage)
				if len(v.TrainedWords) > 0 {
					fmt.Fprintf(w, "trigger words: %v\n", v.TrainedWords)
				}
			})
		},
	}
}

func (a *app) hubSearchCmd() *cobra.Command {
	var base string
	var limit int
	cmd := &cobra.Command{
		Use:   "search civitai QUERY",
		Short: "Search CivitAI for Wan LoRAs (read-only)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "civitai" {
				return usageError("search supports civitai only (got %q)", args[0])
			}
			rs, err := a.civitai().Search(cmd.Context(), args[1], base, limit)
			if err != nil {
				return err
			}
			if rs == nil {
				rs = []civitai.SearchResult{}
			}
			return a.out(rs, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tVERSION\tBASE\tSIZE\tDOWNLOADS\tPULL WITH")
				for _, r := range rs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\tcivitai:%d\n", r.Name, r.VersionName, r.Base, humanBytes(r.SizeBytes), r.Downloads, r.VersionID)
				}
				tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&base, "base", "", "base model: wan2.1-t2v-14b, wan2.1-t2v-1.3b, wan2.1-i2v-14b (default: any Wan2.1), or any")
	cmd.Flags().IntVar(&limit, "limit", 20, "results")
	return cmd
}
