package cli

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/store"
)

// defaultScopeURL: $SCOPE_URL, else a local Scope.
func defaultScopeURL() string {
	if u := os.Getenv("SCOPE_URL"); u != "" {
		return u
	}
	return "http://localhost:8000"
}

func scopeClient(raw string) (*scope.Client, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageError("--scope %q: want an http(s) URL such as http://localhost:8000", raw)
	}
	return &scope.Client{Base: strings.TrimRight(raw, "/")}, nil
}

type installedView struct {
	scope.InstalledLoRA
	InLibrary   bool   `json:"in_library"`
	LibraryName string `json:"library_name,omitempty"`
}

type statusView struct {
	Scope     string                `json:"scope"`
	Health    *scope.Health         `json:"health"`
	Pipeline  *scope.PipelineStatus `json:"pipeline"`
	Installed []installedView       `json:"installed"`
	Errors    []string              `json:"errors,omitempty"`
}

func (a *app) statusCmd() *cobra.Command {
	var scopeURL string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a Scope server's health, pipeline, loaded LoRAs and installed LoRAs vs the library",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := scopeClient(scopeURL)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			v := statusView{Scope: c.Base, Installed: []installedView{}}
			h, err := c.Health(ctx)
			if err != nil {
				return fmt.Errorf("Scope at %s: %w", c.Base, err)
			}
			v.Health = h
			if v.Pipeline, err = c.PipelineStatus(ctx); err != nil {
				v.Errors = append(v.Errors, err.Error())
			}
			installed, err := c.LoRAs(ctx)
			if err != nil {
				v.Errors = append(v.Errors, err.Error())
			}
			byHash := map[string]store.LoRA{}
			if len(installed) > 0 {
				lib, err := a.library()
				if err != nil {
					return err
				}
				all, err := lib.Store.ListLoRAs(ctx, store.Filter{})
				if err != nil {
					return err
				}
				for _, l := range all {
					byHash[strings.ToLower(l.SHA256)] = l
				}
			}
			for _, in := range installed {
				iv := installedView{InstalledLoRA: in}
				if l, ok := byHash[in.SHA256]; ok && in.SHA256 != "" {
					iv.InLibrary, iv.LibraryName = true, l.Name
				}
				v.Installed = append(v.Installed, iv)
			}
			if err := a.out(v, func(w io.Writer) { printStatus(w, &v) }); err != nil {
				return err
			}
			if len(v.Errors) > 0 {
				if a.json {
					return withCode(ExitFailure, fmt.Errorf("%s", strings.Join(v.Errors, "; ")))
				}
				return withCode(ExitFailure, errSilent)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&scopeURL, "scope", defaultScopeURL(), "Scope's base URL ($SCOPE_URL), e.g. https://POD-8000.proxy.runpod.net")
	return cmd
}

func printStatus(w io.Writer, v *statusView) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, f string, a ...any) { fmt.Fprintf(tw, "%s:\t"+f+"\n", append([]any{k}, a...)...) }
	row("scope", "%s", v.Scope)
	h := v.Health
	up := ""
	if h.UptimeS > 0 {
		up = ", up " + (time.Duration(h.UptimeS) * time.Second).String()
	}
	row("health", "%s%s", h.Status, up)
	ver := h.Version
	if h.GitCommit != "" {
		ver += " (" + h.GitCommit + ")"
	}
	row("version", "%s", ver)
	if p := v.Pipeline; p != nil {
		s := p.Status
		if p.PipelineID != "" {
			s += " " + p.PipelineID
		}
		if p.LoadingStage != "" {
			s += ": " + p.LoadingStage
		}
		if p.Error != "" {
			s += ": " + p.Error
		}
		row("pipeline", "%s", s)
		if len(p.LoadedLoRAs) == 0 {
			row("loaded LoRAs", "none")
		}
		for i, l := range p.LoadedLoRAs {
			k := ""
			if i == 0 {
				k = "loaded LoRAs"
			}
			fmt.Fprintf(tw, "%s\t%s ×%g\n", k+":", l.Path, l.Scale)
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "installed LoRAs: %d\n", len(v.Installed))
	if len(v.Installed) > 0 {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  NAME\tSIZE\tSHA256\tLIBRARY")
		for _, in := range v.Installed {
			name := in.Name
			if in.Folder != "" {
				name = in.Folder + "/" + name
			}
			sha := in.SHA256
			if len(sha) > 12 {
				sha = sha[:12]
			}
			lib := "-"
			switch {
			case in.SHA256 == "":
				sha, lib = "?", "unknown (no sha256)"
			case in.InLibrary:
				lib = "yes (" + in.LibraryName + ")"
			default:
				lib = "no"
			}
			fmt.Fprintf(tw, "  %s\t%.2f MB\t%s\t%s\n", name, in.SizeMB, sha, lib)
		}
		tw.Flush()
	}
	for _, e := range v.Errors {
		fmt.Fprintln(w, "error: "+e)
	}
}

// logsPoll is how often `logs -f` polls.
var logsPoll = 2 * time.Second

func (a *app) logsCmd() *cobra.Command {
	var scopeURL string
	var n int
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs",
		Short: "Print the tail of a Scope server's log (-f: follow)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n < 1 || n > 1000 {
				return usageError("-n %d: want 1..1000", n)
			}
			c, err := scopeClient(scopeURL)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			t, err := c.LogsSince(ctx, n, 0)
			if err != nil {
				return err
			}
			emit := func(lines []string) error {
				if a.json {
					return a.out(map[string]any{"lines": lines}, nil)
				}
				for _, l := range lines {
					fmt.Fprintln(a.stdout, l)
				}
				return nil
			}
			if !follow {
				if a.json {
					return a.out(map[string]any{"lines": t.Lines}, nil)
				}
				return emit(t.Lines)
			}
			if err := emit(t.Lines); err != nil {
				return err
			}
			return a.followLogs(ctx, c, t, emit)
		},
	}
	f := cmd.Flags()
	f.StringVar(&scopeURL, "scope", defaultScopeURL(), "Scope's base URL ($SCOPE_URL)")
	f.IntVarP(&n, "lines", "n", 50, "how many lines (1..1000)")
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new lines (polls every 2 s) until interrupted")
	return cmd
}

// followLogs polls the log tail every logsPoll until ctx ends. With an
// offset (Scope supports since_offset) it asks only for new bytes; without,
// it prints the lines after the longest overlap with the previous tail.
func (a *app) followLogs(ctx context.Context, c *scope.Client, prev *scope.LogTail, emit func([]string) error) error {
	last := prev.Lines
	offset, useOffset := prev.Offset, prev.HasOffset
	tick := time.NewTicker(logsPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		var t *scope.LogTail
		var err error
		if useOffset {
			t, err = c.LogsSince(ctx, 1000, offset)
		} else {
			t, err = c.LogsSince(ctx, 1000, 0)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			fmt.Fprintln(a.stderr, "scopectl: "+err.Error()) // transient: keep polling
			continue
		}
		var fresh []string
		switch {
		case useOffset && t.HasOffset:
			if t.Offset < offset { // the log was rotated (a new file): start over
				t, err = c.LogsSince(ctx, 1000, 0)
				if err != nil {
					continue
				}
			}
			fresh, offset = t.Lines, t.Offset
		default:
			useOffset = false
			fresh = newLines(last, t.Lines)
			last = t.Lines
		}
		if len(fresh) > 0 {
			if err := emit(fresh); err != nil {
				return err
			}
		}
	}
}

// newLines returns the lines of cur after its longest prefix that is a
// suffix of prev (all of cur if they do not overlap).
func newLines(prev, cur []string) []string {
	for k := min(len(prev), len(cur)); k > 0; k-- {
		match := true
		for i := range k {
			if prev[len(prev)-k+i] != cur[i] {
				match = false
				break
			}
		}
		if match {
			return cur[k:]
		}
	}
	return cur
}
