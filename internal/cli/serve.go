package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/atomicfile"
	"github.com/daydreamlive/scopectl/internal/gpu"
	"github.com/daydreamlive/scopectl/internal/inflight"
	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/server"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/train"
)

// serveTokenFile is where serve keeps the token it generated, in the data dir (0600).
const serveTokenFile = "serve-token"

// serveToken is serve_token from the configuration, else the one in the data dir,
// generated there on first use.
func (a *app) serveToken() (secret.Secret, string, error) {
	if a.cfg.ServeToken.IsSet() {
		return a.cfg.ServeToken, "", nil
	}
	p := filepath.Join(a.cfg.DataDir, serveTokenFile)
	if b, err := os.ReadFile(p); err == nil && len(strings.TrimSpace(string(b))) >= 16 {
		return secret.New(strings.TrimSpace(string(b))), p, nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return secret.Secret{}, p, err
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return secret.Secret{}, p, err
	}
	tok := "sct_" + hex.EncodeToString(b[:])
	if err := os.MkdirAll(a.cfg.DataDir, 0o700); err != nil {
		return secret.Secret{}, p, err
	}
	if err := atomicfile.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		return secret.Secret{}, p, err
	}
	return secret.New(tok), p, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (a *app) serveCmd() *cobra.Command {
	var listen, scopeURL string
	var every time.Duration
	var rf remoteFlags
	cmd := &cobra.Command{
		Use:   "serve [--listen 127.0.0.1:7860]",
		Short: "One local web page, a JSON API (/api/v1) and Prometheus metrics (/metrics) over LoRAs, pods, deploys, training and transfers",
		Long: "serve answers on --listen (default 127.0.0.1:7860, loopback only). Reads on loopback need no token;\n" +
			"any other address needs the token for every request, and actions always need it (Authorization:\n" +
			"Bearer TOKEN, or a login on the page). The token is serve_token (SCOPECTL_SERVE_TOKEN), else one\n" +
			"generated into the data dir's serve-token file (0600). The page, its script and Chart.js are in\n" +
			"the binary: it works offline, on a pod too.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			host, _, err := net.SplitHostPort(listen)
			if err != nil {
				return usageError("--listen %q: want HOST:PORT", listen)
			}
			lib, err := a.library()
			if err != nil {
				return err
			}
			tok, tokPath, err := a.serveToken()
			if err != nil {
				return fmt.Errorf("serve token: %w", err)
			}
			secret.Default.Add(tok)
			env := remote.Env{Secrets: secret.Default, Lookup: a.cfg.Secret, KnownHosts: rf.knownHosts,
				AcceptNewHostKey: rf.acceptNewHostKey, Options: map[string]string{}}
			opt := server.Options{Lib: lib, RemoteEnv: env, Token: tok, OpenReads: isLoopback(host), Redactor: secret.Default,
				Version: Version, Interval: every, PodGPU: server.SSHGPU(env), LocalScope: scopeURL, Transfers: inflight.Folder(a.cfg.DataDir),
				Log: slog.New(slog.NewTextHandler(a.stderr, nil))}
			if a.cfg.RunPodKey.IsSet() {
				c, err := a.runpod()
				if err != nil {
					return err
				}
				opt.RunPod = c
			} else {
				a.warn("RUNPOD_API_KEY is not set: RunPod pods are not shown")
			}
			// POST /api/v1/deploys runs the same deploy core as `scopectl deploy`.
			dep, err := a.deployer(rf, false)
			if err != nil {
				return err
			}
			dep.Progress = progress.Reporter{}
			if opt.RunPod != nil {
				dep.RunPod = opt.RunPod
				a.podHooks(dep, opt.RunPod, budgetFlags{}, rf)
			}
			opt.Deployer = dep
			if ts, ok := lib.Store.(store.TrainStore); ok {
				opt.Trainer = &train.Trainer{Lib: lib, Jobs: ts, Env: env}
				if opt.RunPod != nil {
					c := opt.RunPod
					opt.Trainer.Resolve = func(ctx context.Context, job store.TrainJob) (string, error) {
						p, err := c.Get(ctx, job.PodID)
						if err != nil {
							return "", err
						}
						u, ok := p.SSHURL()
						if !ok {
							return "", fmt.Errorf("pod %s has no public SSH port (status %s)", p.ID, p.Status)
						}
						return u, nil
					}
				}
				a.kubeTrainer(opt.Trainer, rf) // jobs on Kubernetes Jobs
			}
			if src := gpu.Local(cmd.Context()); fmt.Sprint(src) != "none" {
				opt.LocalGPU = src
			}
			srv, err := server.New(opt)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			go srv.Run(ctx)
			hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
			go func() {
				<-ctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				hs.Shutdown(sctx)
			}()
			where := "SCOPECTL_SERVE_TOKEN"
			if tokPath != "" {
				where = tokPath
			}
			fmt.Fprintf(a.stderr, "scopectl serve: http://%s/ (token for actions: in %s)\n", ln.Addr(), where)
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:7860", "address to listen on (anything but loopback needs the token for reads too)")
	cmd.Flags().StringVar(&scopeURL, "scope", os.Getenv("SCOPE_URL"), "Scope on this machine, shown as pod \"local\" (default $SCOPE_URL)")
	cmd.Flags().DurationVar(&every, "every", 5*time.Second, "how often pods, GPUs, Scope and jobs are read")
	rf.addSSH(cmd)
	return cmd
}
