// Package cli is scopectl's command tree. Each file holds one noun; commands parse
// flags, call the domain packages and print text or --json. Nothing else imports cli.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/config"
	"github.com/daydreamlive/scopectl/internal/hub/hf"
	"github.com/daydreamlive/scopectl/internal/inflight"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/store"
)

// Exit codes scripts can rely on.
const (
	ExitOK       = 0
	ExitFailure  = 1 // an error, or a check that found problems (verify, secrets scan)
	ExitUsage    = 2 // bad flags or arguments
	ExitRefused  = 3 // a safety gate refused (base mismatch, foreign file in the way)
	ExitNotFound = 4 // a named LoRA is not in the library
)

// app is the state shared by all commands of one invocation.
type app struct {
	stdout, stderr io.Writer
	json           bool
	tty            bool // stderr is a terminal: show progress bars
	verbose        bool
	flags          map[string]*string // config key -> flag value
	cfg            *config.Config
	lib            *library.Library
	warned         map[string]bool // warnings already printed
}

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code, err}
}

// usageError marks bad arguments.
func usageError(format string, a ...any) error {
	return &exitError{ExitUsage, fmt.Errorf(format, a...)}
}

// Version is set at build time with -ldflags "-X …/internal/cli.Version=v1.2.3".
var Version = "dev"

// Main runs scopectl with args and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Everything scopectl prints passes through the redactor, whatever printed it: a
	// secret in a file name, a library's error text or a log line is scrubbed.
	tty := progress.Auto(stderr, false).Mode == progress.Bar
	rout, rerr := secret.Default.Writer(stdout), secret.Default.Writer(stderr)
	defer rout.Flush()
	defer rerr.Flush()
	stdout, stderr = rout, rerr
	a := &app{stdout: stdout, stderr: stderr, tty: tty, flags: map[string]*string{}}
	root := a.rootCmd()
	// --json is read before cobra parses anything, so that an unknown command or a bad
	// flag (errors cobra reports before it sets the flag) is reported as JSON too.
	a.json = a.json || wantsJSON(args)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if a.lib != nil {
		a.lib.Close()
	}
	if err == nil {
		return ExitOK
	}
	code := exitCode(err)
	msg := secret.Default.Redact(err.Error())
	name := commandName(cmd)
	if a.json {
		_ = json.NewEncoder(stderr).Encode(map[string]any{"error": msg, "exit_code": code, "command": name})
	} else if !errors.Is(err, errSilent) {
		fmt.Fprintln(stderr, errPrefix(name)+msg)
	}
	return code
}

// exitCode maps an error to the exit status scripts rely on (README, "Scripting").
func exitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	case isFlagError(err):
		return ExitUsage
	case errors.Is(err, library.ErrRefused):
		return ExitRefused
	case errors.Is(err, store.ErrNotFound), errors.Is(err, hf.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return ExitNotFound
	}
	return ExitFailure
}

// commandName is the command's path without "scopectl" ("lora inspect"), "" for the root.
func commandName(cmd *cobra.Command) string {
	if cmd == nil || !cmd.HasParent() {
		return ""
	}
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
}

// errPrefix is how every error line starts: "scopectl lora inspect: ".
func errPrefix(name string) string {
	if name == "" {
		return "scopectl: "
	}
	return "scopectl " + name + ": "
}

// wantsJSON reports whether args ask for --json before any "--".
func wantsJSON(args []string) bool {
	for _, x := range args {
		switch x {
		case "--":
			return false
		case "--json", "--json=true", "--json=1", "--json=t", "--json=TRUE", "--json=True":
			return true
		}
	}
	return false
}

// errSilent is returned by commands that already printed their result and only need
// a non-zero exit (verify found damage, scan found secrets).
var errSilent = errors.New("problems found")

func isFlagError(err error) bool {
	var fe *flagErr
	return errors.As(err, &fe)
}

type flagErr struct{ error }

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "scopectl",
		Short:         "Train, fetch, check, move and serve Wan video LoRAs for Daydream Scope",
		Long:          "scopectl runs the whole life of a video LoRA for Daydream Scope: a content-addressed LoRA library\nthat knows every Wan LoRA format, and installs whose effect in Scope is exactly the trained one.",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.setup(cmd)
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &flagErr{err} })
	pf := root.PersistentFlags()
	pf.BoolVar(&a.json, "json", false, "print machine-readable JSON (stable field names)")
	pf.BoolVarP(&a.verbose, "verbose", "v", false, "log details to stderr")
	for _, k := range config.Keys() {
		if k.Secret || k.Flag == "" {
			continue // secrets never come from flags: they would show in process lists
		}
		v := new(string)
		a.flags[k.Name] = v
		pf.StringVar(v, k.Flag[2:], "", k.Description)
	}
	root.AddCommand(a.versionCmd(), a.configCmd(), a.secretsCmd(), a.loraCmd(), a.syncCmd(), a.pullCmd(), a.agentCmd(), a.gpuCmd(), a.hubCmd(), a.podCmd(), a.statusCmd(), a.logsCmd(), a.costCmd(), a.deployCmd(), a.guardCmd())
	root.AddCommand(a.datasetCmd())
	root.AddCommand(a.trainCmd())
	root.AddCommand(a.serveCmd())
	// One rule for every command, cobra's own included: an unknown command or a wrong
	// number of arguments is bad usage (exit 2), named by the command it concerns.
	// cobra's completion command writes to the output set when it is made.
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	group(root)
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			group(c)
		}
	}
	usageArgs(root)
	return root
}

// usageArgs makes every argument-count check in the tree a usage error that shows the
// command's usage line.
func usageArgs(cmd *cobra.Command) {
	if check := cmd.Args; check != nil {
		cmd.Args = func(c *cobra.Command, args []string) error {
			err := check(c, args)
			if err == nil {
				return nil
			}
			var ee *exitError
			if errors.As(err, &ee) {
				return err
			}
			msg := err.Error()
			if strings.HasPrefix(msg, "unknown command ") && len(args) > 0 {
				msg = fmt.Sprintf("unexpected argument %q", args[0])
			}
			return usageError("%s (usage: %s)", msg, strings.TrimSuffix(c.UseLine(), " [flags]"))
		}
	}
	for _, c := range cmd.Commands() {
		usageArgs(c)
	}
}

// group makes a command that only holds subcommands reject unknown ones (cobra would
// print help and exit 0, which a script would take for success).
func group(cmd *cobra.Command) *cobra.Command {
	cmd.Args = cobra.ArbitraryArgs
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if len(args) > 0 {
			hint := ""
			if s := c.SuggestionsFor(args[0]); len(s) > 0 {
				hint = "did you mean " + strings.Join(s, " or ") + "? "
			}
			return usageError("unknown command %q (%ssee '%s --help')", args[0], hint, c.CommandPath())
		}
		return c.Help()
	}
	return cmd
}

// setup loads configuration and the redacting logger before any command runs.
func (a *app) setup(cmd *cobra.Command) error {
	flags := map[string]string{}
	for key, v := range a.flags {
		if f := cmd.Flags().Lookup(config.FlagName(key)[2:]); f != nil && f.Changed {
			flags[key] = *v
		}
	}
	cfg, err := config.Loader{Flags: flags}.Load()
	if err != nil {
		return err
	}
	a.cfg = cfg
	for _, s := range cfg.Secrets() {
		secret.Default.Add(s)
	}
	level := slog.LevelWarn
	if a.verbose {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(secret.NewSlogHandler(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}), secret.Default)))
	for _, w := range cfg.Warnings {
		a.warn(w)
	}
	return nil
}

// warn prints a warning once, in scopectl's own format, on stderr: a line
// "scopectl: warning: …", or with --json an NDJSON event {"event":"warning",…} (stdout
// stays the command's JSON alone).
func (a *app) warn(msg string) {
	if a.warned == nil {
		a.warned = map[string]bool{}
	}
	if a.warned[msg] {
		return
	}
	a.warned[msg] = true
	if a.json {
		_ = json.NewEncoder(a.stderr).Encode(map[string]string{"event": "warning", "message": msg})
		return
	}
	fmt.Fprintln(a.stderr, "scopectl: warning: "+msg)
}

// library opens the embedded library on first use.
func (a *app) library() (*library.Library, error) {
	if a.lib == nil {
		l, err := library.Open(a.cfg.DataDir)
		if err != nil {
			return nil, err
		}
		l.Progress = a.progress()
		a.lib = l
	}
	return a.lib, nil
}

func (a *app) progress() progress.Reporter {
	var r progress.Reporter
	switch {
	case a.json:
		r = progress.Reporter{Mode: progress.JSON, W: a.stderr}
	case a.tty:
		r = progress.Reporter{Mode: progress.Bar, W: a.stderr}
	}
	if a.cfg != nil && a.cfg.DataDir != "" { // transfers in flight, for scopectl serve
		r.Publish = inflight.Folder(a.cfg.DataDir).Publish
	}
	return r
}

// out prints v as JSON with --json, else calls text.
func (a *app) out(v any, text func(w io.Writer)) error {
	if a.json {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	text(a.stdout)
	return nil
}
