package cli

import (
	"encoding/base64"
	"fmt"
	"html"
	"io"
	"mime"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/atomicfile"
	"github.com/daydreamlive/scopectl/internal/train"
)

func (a *app) trainCompare() *cobra.Command {
	var rf remoteFlags
	var steps, htmlOut string
	cmd := &cobra.Command{
		Use:   "compare JOB [--steps 400,800] [--html FILE]",
		Short: "Put the samples of a job's checkpoints side by side: one row per prompt, one column per step",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := train.ParseSteps(steps)
			if err != nil {
				return usageError("--steps: %v", err)
			}
			t, err := a.trainer(rf)
			if err != nil {
				return err
			}
			c, err := t.Compare(cmd.Context(), args[0], st)
			if err != nil {
				return err
			}
			if htmlOut != "" {
				var b strings.Builder
				if err := writeCompareHTML(&b, c); err != nil {
					return err
				}
				if err := atomicfile.WriteFile(htmlOut, []byte(b.String()), 0o644); err != nil {
					return err
				}
				if !a.json {
					fmt.Fprintf(a.stderr, "wrote %s\n", htmlOut)
				}
			}
			if len(c.Missing) > 0 {
				a.warn("no checkpoint collected at step " + strings.Join(c.Missing, ", "))
			}
			return a.out(c, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
				fmt.Fprint(tw, "prompt")
				for _, s := range c.Steps {
					fmt.Fprintf(tw, "\t%s", stepLabel(s))
				}
				fmt.Fprintln(tw)
				for _, r := range c.Prompts {
					fmt.Fprintf(tw, "%d %s", r.Index, clip(r.Prompt, 40))
					for _, p := range r.Samples {
						if p == "" {
							p = "-"
						}
						fmt.Fprintf(tw, "\t%s", p)
					}
					fmt.Fprintln(tw)
				}
				tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&steps, "steps", "", "the steps to compare, e.g. 400,800 (default: every collected checkpoint)")
	cmd.Flags().StringVar(&htmlOut, "html", "", "also write a self-contained HTML page with the samples to FILE")
	rf.add(cmd)
	return cmd
}

func stepLabel(s train.ComparedStep) string {
	l := fmt.Sprintf("step %d", s.Step)
	if s.Final {
		l += " (final)"
	}
	if s.Loss != nil {
		l += fmt.Sprintf(" loss %.4f", *s.Loss)
	}
	return l
}

func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// writeCompareHTML writes one page with every sample inlined (data: URIs): it opens
// anywhere, without the library.
func writeCompareHTML(w io.Writer, c *train.Comparison) error {
	fmt.Fprintf(w, "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>%s: samples by step</title>\n", html.EscapeString(c.Name))
	fmt.Fprint(w, "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px;vertical-align:top;text-align:center}td.p{text-align:left;max-width:16em}img,video{max-width:320px;display:block}</style></head><body>\n")
	fmt.Fprintf(w, "<h1>%s</h1><p>job %s</p>\n<table><tr><th>prompt</th>", html.EscapeString(c.Name), html.EscapeString(c.JobID))
	for _, s := range c.Steps {
		fmt.Fprintf(w, "<th>%s<br><small>%s</small></th>", html.EscapeString(stepLabel(s)), html.EscapeString(s.LoRA))
	}
	fmt.Fprint(w, "</tr>\n")
	for _, r := range c.Prompts {
		fmt.Fprintf(w, "<tr><td class=\"p\">%d. %s</td>", r.Index, html.EscapeString(r.Prompt))
		for _, p := range r.Samples {
			if p == "" {
				fmt.Fprint(w, "<td>–</td>")
				continue
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			typ := mime.TypeByExtension(strings.ToLower(filepath.Ext(p)))
			if typ == "" {
				typ = "application/octet-stream"
			}
			src := "data:" + typ + ";base64," + base64.StdEncoding.EncodeToString(b)
			if strings.HasPrefix(typ, "video/") {
				fmt.Fprintf(w, "<td><video src=\"%s\" autoplay loop muted playsinline></video></td>", src)
			} else {
				fmt.Fprintf(w, "<td><img src=\"%s\" alt=\"%s\"></td>", src, html.EscapeString(filepath.Base(p)))
			}
		}
		fmt.Fprint(w, "</tr>\n")
	}
	_, err := fmt.Fprint(w, "</table></body></html>\n")
	return err
}
