package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/remote"
)

// DefaultAgentBinDir is where `agent install` puts scopectl on a pod: on the persistent
// volume, so a pod restart keeps it.
const DefaultAgentBinDir = "/workspace/.scopectl"

func (a *app) agentInstallCmd() *cobra.Command {
	var rf remoteFlags
	var loraDir, listen, binary string
	cmd := &cobra.Command{
		Use:   "install ssh://user@host:port[/BIN_DIR] | ssh+pty://…",
		Short: "Copy scopectl to a pod over SSH (or the PTY gateway) and start the agent there",
		Long: "Copies this scopectl binary (a static linux/amd64 build) and the agent token into BIN_DIR\n" +
			"(default " + DefaultAgentBinDir + ", mode 700), then starts `scopectl agent` in the background,\n" +
			"replacing one started earlier. The token is taken from SCOPECTL_AGENT_TOKEN and travels\n" +
			"inside the verified file transfer, never on a command line.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			token := a.cfg.AgentToken
			if !token.IsSet() {
				return usageError("set SCOPECTL_AGENT_TOKEN (e.g. in .env: SCOPECTL_AGENT_TOKEN=$(openssl rand -hex 32)); sync uses the same token")
			}
			u, err := url.Parse(args[0])
			if err != nil || (u.Scheme != "ssh" && u.Scheme != "ssh+pty") {
				return usageError("%s: expected an ssh:// or ssh+pty:// URL", remote.Redact(args[0]))
			}
			if u.Path == "" || u.Path == "/" {
				u.Path = DefaultAgentBinDir
			}
			if binary == "" {
				if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
					return usageError("this scopectl is %s/%s; pass --binary with a linux/amd64 build for the pod", runtime.GOOS, runtime.GOARCH)
				}
				if binary, err = os.Executable(); err != nil {
					return err
				}
			}
			bin, err := os.ReadFile(binary)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			r, run, err := a.openRunner(ctx, u.String(), rf)
			if err != nil {
				return err
			}
			defer r.Close()
			dir := u.Path
			sh := func(script string) (string, error) {
				out, code, err := run.Run(ctx, script)
				if err != nil {
					return out, err
				}
				if code != 0 {
					return out, fmt.Errorf("%s: %s: exit status %d: %s", r, strings.SplitN(script, "\n", 2)[0], code, strings.TrimSpace(out))
				}
				return out, nil
			}
			if _, err := sh("mkdir -p " + shq(dir) + " && chmod 700 " + shq(dir)); err != nil {
				return err
			}
			t := a.progress().Start("send", "scopectl", int64(len(bin)))
			if err := putBytes(ctx, r, "scopectl", bin, t); err != nil {
				return err
			}
			t.Finish()
			if err := putBytes(ctx, r, "agent.token", []byte(token.Reveal()+"\n"), nil); err != nil {
				return err
			}
			exe, tok, log, pid := path.Join(dir, "scopectl"), path.Join(dir, "agent.token"), path.Join(dir, "agent.log"), path.Join(dir, "agent.pid")
			start := strings.Join([]string{
				"chmod 700 " + shq(exe) + " && chmod 600 " + shq(tok),
				"if [ -f " + shq(pid) + " ]; then kill $(cat " + shq(pid) + ") 2>/dev/null; sleep 1; fi",
				"nohup " + shq(exe) + " agent --dir " + shq(loraDir) + " --listen " + shq(listen) + " --token-file " + shq(tok) +
					" > " + shq(log) + " 2>&1 < /dev/null & echo $! > " + shq(pid),
				"sleep 1; kill -0 $(cat " + shq(pid) + ") && cat " + shq(pid) + " && echo \"pod=${RUNPOD_POD_ID:-}\"",
			}, "\n")
			out, err := sh(start)
			if err != nil {
				logTail, _ := sh("tail -n 5 " + shq(log))
				return fmt.Errorf("%v; agent log: %s", err, strings.TrimSpace(logTail))
			}
			info := map[string]any{"remote": r.String(), "binary": exe, "listen": listen, "lora_dir": loraDir, "log": log}
			for _, ln := range strings.Split(out, "\n") {
				ln = strings.TrimSpace(ln)
				if n, err := strconv.Atoi(ln); err == nil {
					info["pid"] = n
				}
				if pod, ok := strings.CutPrefix(ln, "pod="); ok && pod != "" {
					_, port, _ := net.SplitHostPort(listen)
					info["url"] = fmt.Sprintf("https://%s-%s.proxy.runpod.net", pod, port)
				}
			}
			return a.out(info, func(w io.Writer) {
				fmt.Fprintf(w, "agent running on %s (pid %v), serving %s on %s; log %s\n", r, info["pid"], loraDir, listen, log)
				if u, ok := info["url"]; ok {
					fmt.Fprintf(w, "sync with: scopectl sync --all --to %s   (expose port %s as an HTTP port)\n", u, strings.TrimPrefix(listen[strings.LastIndex(listen, ":"):], ":"))
				}
			})
		},
	}
	cmd.Flags().StringVar(&loraDir, "pod-lora-dir", "/workspace/models/lora", "Scope's LoRA folder on the pod")
	cmd.Flags().StringVar(&listen, "listen", DefaultAgentListen, "address the agent listens on, on the pod")
	cmd.Flags().StringVar(&binary, "binary", "", "scopectl binary to copy (default: this one, if linux/amd64)")
	rf.add(cmd)
	return cmd
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func putBytes(ctx context.Context, r remote.Remote, name string, b []byte, progress io.Writer) error {
	sum := sha256.Sum256(b)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	_, err := r.Put(ctx, name, remote.Source{R: bytes.NewReader(b), Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])}, remote.PutOptions{Progress: progress})
	return err
}
