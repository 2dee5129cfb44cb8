package cli

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/config"
	"github.com/daydreamlive/scopectl/internal/secretscan"
)

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print scopectl's version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			v := struct {
				Version  string `json:"version"`
				Commit   string `json:"commit,omitempty"`
				Modified bool   `json:"modified,omitempty"`
				Go       string `json:"go"`
				Platform string `json:"platform"`
			}{Version: Version, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					switch s.Key {
					case "vcs.revision":
						v.Commit = s.Value
					case "vcs.modified":
						v.Modified = s.Value == "true"
					}
				}
			}
			return a.out(v, func(w io.Writer) {
				fmt.Fprintf(w, "scopectl %s", v.Version)
				if v.Commit != "" {
					fmt.Fprintf(w, " (%.12s)", v.Commit)
				}
				fmt.Fprintf(w, " %s %s\n", v.Go, v.Platform)
			})
		},
	}
}

func (a *app) configCmd() *cobra.Command {
	cmd := group(&cobra.Command{Use: "config", Short: "Show scopectl's configuration"})
	cmd.AddCommand(&cobra.Command{
		Use:   "show",
		Short: "Print every effective setting and where it came from (secrets redacted)",
		Long: "Precedence: flags > environment > .env in the working directory (never overriding a real\n" +
			"environment variable) > $XDG_CONFIG_HOME/scopectl/config.yaml > defaults.",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			doc := struct {
				Values     []config.Value `json:"values"`
				ConfigFile string         `json:"config_file"`
				DotEnvFile string         `json:"dotenv_file"`
				Warnings   []string       `json:"warnings"`
			}{a.cfg.Values, a.cfg.ConfigFile, a.cfg.DotEnvFile, a.cfg.Warnings}
			if doc.Warnings == nil {
				doc.Warnings = []string{}
			}
			return a.out(doc, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "KEY\tVALUE\tSOURCE\tORIGIN")
				for _, v := range a.cfg.Values {
					val := v.Value
					if val == "" {
						val = "-"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Key, val, v.Source, v.Origin)
				}
				tw.Flush()
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "keys",
		Short: "List every setting with its environment variables and flag",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			keys := config.Keys()
			return a.out(keys, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "KEY\tENV\tFLAG\tDESCRIPTION")
				for _, k := range keys {
					flag := k.Flag
					if k.Secret {
						flag = "(secret: env/.env/config only)"
					}
					env := strings.Join(k.Env, ", ")
					if env == "" {
						env = "-"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Name, env, flag, k.Description)
				}
				tw.Flush()
			})
		},
	})
	return cmd
}

func (a *app) secretsCmd() *cobra.Command {
	cmd := group(&cobra.Command{Use: "secrets", Short: "Find leaked credentials"})
	scan := &cobra.Command{
		Use:   "scan PATH...",
		Short: "Scan files and folders for leaked credentials; exit 1 when any is found",
		Long: "Finds Hugging Face, CivitAI, RunPod, AWS-style and Context7 keys, private keys, CROC_SECRET=\n" +
			"lines and .env files tracked by git. Previews are redacted.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			findings, err := secretscan.Scan(cmd.Context(), args, secretscan.Options{})
			if err != nil {
				return err
			}
			if findings == nil {
				findings = []secretscan.Finding{}
			}
			if err := a.out(map[string]any{"findings": findings, "count": len(findings)}, func(w io.Writer) {
				for _, f := range findings {
					if f.Line == 0 { // a finding about the whole file (a .env tracked by git)
						fmt.Fprintf(w, "%s: %s (the whole file)\n", f.Path, f.Kind)
						continue
					}
					fmt.Fprintf(w, "%s:%d: %s %s\n", f.Path, f.Line, f.Kind, f.Preview)
				}
				if len(findings) == 0 {
					fmt.Fprintln(w, "no secrets found")
				} else {
					fmt.Fprintf(w, "%s found: rotate them, then remove them from the files (and git history)\n", plural(len(findings), "possible secret"))
				}
			}); err != nil {
				return err
			}
			if len(findings) > 0 {
				return withCode(ExitFailure, errSilent)
			}
			return nil
		},
	}
	cmd.AddCommand(scan)
	return cmd
}
