package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/agent"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// DefaultAgentListen is where `scopectl agent` listens unless told otherwise: all
// interfaces, because RunPod's HTTPS proxy reaches the pod's port from outside the
// container (expose it as an HTTP port, e.g. https://{podId}-8765.proxy.runpod.net).
const DefaultAgentListen = "0.0.0.0:8765"

// agentTokenEnv is the variable the agent (and the https:// remote) read the token from.
const agentTokenEnv = "SCOPECTL_AGENT_TOKEN"

// minAgentTokenLen refuses guessable tokens: the agent may face the internet.
const minAgentTokenLen = 16

func (a *app) agentCmd() *cobra.Command {
	var dir, listen, tokenFile, tlsCert, tlsKey string
	cmd := &cobra.Command{
		Use:   "agent [--dir DIR] [--listen ADDR]",
		Short: "Receive LoRAs over HTTP(S) on a pod: the far side of https:// remotes",
		Long: "Serves Scope's LoRA folder to `scopectl sync --to https://…`: uploads come in verified\n" +
			"chunks, resume after an interruption of either side (even an agent restart), and are\n" +
			"published atomically after their sha256 is checked.\n\n" +
			"The bearer token comes from " + agentTokenEnv + " or --token-file, never from a flag value\n" +
			"(it would show in the process list); generate one with `openssl rand -hex 32` and give\n" +
			"the client the same value in its " + agentTokenEnv + ".\n\n" +
			"On RunPod, expose the port as an HTTP port and use https://{podId}-{port}.proxy.runpod.net:\n" +
			"the proxy terminates TLS, so plain HTTP on the pod is normal. Elsewhere, give the agent a\n" +
			"certificate with --tls-cert/--tls-key.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" && a.cfg != nil {
				dir = a.cfg.LoRADir
			}
			if dir == "" {
				return usageError("--dir: no folder given and no lora_dir configured")
			}
			if (tlsCert == "") != (tlsKey == "") {
				return usageError("--tls-cert and --tls-key go together")
			}
			token, err := a.agentToken(tokenFile)
			if err != nil {
				return err
			}
			secret.Default.Add(token)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			srv := &agent.Server{Dir: dir, Token: token, Log: slog.Default()}
			if err := srv.Init(); err != nil {
				return err
			}
			defer srv.Close()
			hs := srv.HTTPServer()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			scheme := "http"
			if tlsCert != "" {
				scheme = "https"
			}
			info := struct {
				Dir    string `json:"dir"`
				Listen string `json:"listen"`
				Scheme string `json:"scheme"`
				API    string `json:"api"`
			}{srv.Dir, ln.Addr().String(), scheme, agent.APIVersion}
			if err := a.out(info, func(w io.Writer) {
				fmt.Fprintf(w, "scopectl agent: serving %s on %s://%s (API %s); Ctrl-C stops\n", info.Dir, scheme, info.Listen, info.API)
			}); err != nil {
				ln.Close()
				return err
			}
			return serveAgent(cmd.Context(), hs, ln, tlsCert, tlsKey)
		},
	}
	cmd.AddCommand(a.agentInstallCmd())
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "folder to publish LoRAs in (default: lora_dir, Scope's LoRA folder)")
	f.StringVar(&listen, "listen", DefaultAgentListen, "address to listen on")
	f.StringVar(&tokenFile, "token-file", "", "read the bearer token from this file instead of "+agentTokenEnv)
	f.StringVar(&tlsCert, "tls-cert", "", "serve HTTPS with this certificate (PEM; not needed behind RunPod's proxy)")
	f.StringVar(&tlsKey, "tls-key", "", "private key of --tls-cert (PEM)")
	return cmd
}

// agentToken reads the token from --token-file or the environment (config's
// agent_token, i.e. SCOPECTL_AGENT_TOKEN), never from a flag value.
func (a *app) agentToken(file string) (secret.Secret, error) {
	var v string
	if file != "" {
		fi, err := os.Stat(file)
		if err != nil {
			return secret.Secret{}, usageError("--token-file: %v", err)
		}
		if fi.Size() > 4096 {
			return secret.Secret{}, usageError("--token-file %s: larger than 4 KiB; expected just the token", file)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			slog.Warn("token file is readable by group or others; chmod 600 it", "file", file)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return secret.Secret{}, usageError("--token-file: %v", err)
		}
		v = strings.TrimSpace(string(b))
		if v == "" {
			return secret.Secret{}, usageError("--token-file %s is empty", file)
		}
	} else if a.cfg != nil && a.cfg.AgentToken.IsSet() {
		v = strings.TrimSpace(a.cfg.AgentToken.Reveal())
	} else {
		v = strings.TrimSpace(os.Getenv(agentTokenEnv))
	}
	if v == "" {
		return secret.Secret{}, usageError("no agent token: set %s (e.g. export %s=$(openssl rand -hex 32)) or use --token-file", agentTokenEnv, agentTokenEnv)
	}
	if len(v) < minAgentTokenLen || strings.ContainsAny(v, " \t\r\n") {
		return secret.Secret{}, usageError("the agent token must be at least %d characters without spaces (e.g. `openssl rand -hex 32`)", minAgentTokenLen)
	}
	return secret.New(v), nil
}

// serveAgent serves until ctx ends, then shuts down gracefully: in-flight chunks finish
// (their sessions stay resumable either way), for at most 10 seconds.
func serveAgent(ctx context.Context, hs *http.Server, ln net.Listener, cert, key string) error {
	errc := make(chan error, 1)
	go func() {
		if cert != "" {
			errc <- hs.ServeTLS(ln, cert, key)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = hs.Close()
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
