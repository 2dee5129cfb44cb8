// Package cli is scopectl's command tree. Each file holds one noun; commands parse
// flags, call the domain packages and print text or --json. Nothing else imports cli.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/config"
	"github.com/daydreamlive/scopectl/internal/hub/hf"
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
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if a.lib != nil {
		a.lib.Close()
	}
	if err == nil {
		return ExitOK
	}
	code := ExitFailure
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case errors.Is(err, library.ErrRefused):
		code = ExitRefused
	case errors.Is(err, store.ErrNotFound), errors.Is(err, hf.ErrNotFound):
		code = ExitNotFound
	case isFlagError(err):
		code = ExitUsage
	}
	msg := secret.Default.Redact(err.Error())
	if a.json {
		_ = json.NewEncoder(stderr).Encode(map[string]any{"error": msg, "exit_code": code})
	} else if !errors.Is(err, errSilent) {
		fmt.Fprintln(stderr, "scopectl: "+msg)
	}
	return code
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
	root.AddCommand(a.versionCmd(), a.configCmd(), a.secretsCmd(), a.loraCmd(), a.syncCmd(), a.pullCmd(), a.agentCmd(), a.gpuCmd(), a.hubCmd(), a.podCmd(), a.statusCmd(), a.logsCmd(), a.costCmd(), a.deployCmd())
	return root
}

// group makes a command that only holds subcommands reject unknown ones (cobra would
// print help and exit 0, which a script would take for success).
func group(cmd *cobra.Command) *cobra.Command {
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError("unknown command %q for %q (see '%s --help')", args[0], c.CommandPath(), c.CommandPath())
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
		slog.Warn(w)
	}
	return nil
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
	switch {
	case a.json:
		return progress.Reporter{Mode: progress.JSON, W: a.stderr}
	case a.tty:
		return progress.Reporter{Mode: progress.Bar, W: a.stderr}
	}
	return progress.Reporter{}
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
