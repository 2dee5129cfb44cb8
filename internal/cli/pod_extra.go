package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/sshhost"
	"github.com/daydreamlive/scopectl/internal/remote"
)

// EnvSSHGateway overrides RunPod's PTY-only SSH gateway: [user@]host[:port]. With a
// user, that login is used as it is instead of the pod's own (for tests, or a gateway
// in front of RunPod's).
const EnvSSHGateway = "SCOPECTL_RUNPOD_SSH_GATEWAY"

// DefaultSSHGateway is RunPod's gateway: `ssh {podId}-{suffix}@ssh.runpod.io`, a terminal
// only (no exec, SFTP, SCP or forwarding).
const DefaultSSHGateway = "ssh.runpod.io"

// podHostIDer is a provider that can read a pod's gateway login: RunPod's
// machine.podHostId ("{podId}-{suffix}"; the suffix names the pod's host, so it cannot be
// derived from the pod id), which only its GraphQL API gives.
type podHostIDer interface {
	PodHostID(ctx context.Context, id string) (string, error)
}

var gatewayUserRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// sshLogin is user@host:port.
type sshLogin struct {
	User, Host string
	Port       int
}

func (l sshLogin) addr() string { return net.JoinHostPort(l.Host, strconv.Itoa(l.Port)) }

func (l sshLogin) String() string { return l.User + "@" + l.addr() }

// podGateway is the gateway login for pod p: $SCOPECTL_RUNPOD_SSH_GATEWAY or
// ssh.runpod.io, with the pod's podHostId as user unless the override names one.
func podGateway(ctx context.Context, c any, p *provider.Pod) (sshLogin, error) {
	raw := strings.TrimSpace(os.Getenv(EnvSSHGateway))
	if raw == "" {
		raw = DefaultSSHGateway
	}
	l := sshLogin{Port: 22}
	hostport := raw
	if u, h, ok := strings.Cut(raw, "@"); ok {
		l.User, hostport = u, h
	}
	l.Host = hostport
	if h, port, err := net.SplitHostPort(hostport); err == nil {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return l, usageError("%s=%q: bad port", EnvSSHGateway, raw)
		}
		l.Host, l.Port = h, n
	}
	if l.Host == "" || strings.ContainsAny(l.Host, " /@\t") || (l.User != "" && !gatewayUserRE.MatchString(l.User)) {
		return l, usageError("%s=%q: want [user@]host[:port]", EnvSSHGateway, raw)
	}
	if l.User != "" {
		return l, nil
	}
	h, ok := c.(podHostIDer)
	if !ok {
		return l, fmt.Errorf("pod %s: its provider has no SSH gateway login; set %s=USER@%s", p.ID, EnvSSHGateway, l.Host)
	}
	user, err := h.PodHostID(ctx, p.ID)
	if err != nil {
		return l, fmt.Errorf("pod %s: reading its gateway login (podHostId): %w", p.ID, err)
	}
	if !gatewayUserRE.MatchString(user) || !strings.HasPrefix(user, p.ID+"-") {
		return l, fmt.Errorf("pod %s: RunPod gave the gateway login %q, not {podId}-{suffix}", p.ID, user)
	}
	l.User = user
	return l, nil
}

// podRunner opens a connection that runs shell commands on pod p: SSH exec to its public
// IP and mapped port 22 when it has them (and !viaGateway), else RunPod's PTY gateway
// (ssh+pty://). The caller closes the remote.
func (a *app) podRunner(ctx context.Context, c any, p *provider.Pod, rf remoteFlags, viaGateway bool) (remote.Remote, remote.Runner, error) {
	u, direct := p.SSHURL()
	if !direct || viaGateway {
		if p.Status != provider.StatusRunning {
			return nil, nil, fmt.Errorf("pod %s is %s: start it first (scopectl pod start %s)", p.ID, p.Status, p.ID)
		}
		l, err := podGateway(ctx, c, p)
		if err != nil {
			return nil, nil, err
		}
		u = "ssh+pty://" + l.String()
	}
	return a.openRunner(ctx, u, rf)
}

// podSSH opens a shell on a pod, or runs one command there: direct TCP to its public IP
// and mapped port (OpenSSH, which checks known_hosts itself) when it has them, RunPod's
// PTY-only gateway otherwise.
func (a *app) podSSH() *cobra.Command {
	var viaGateway bool
	var rf remoteFlags
	cmd := &cobra.Command{
		Use:   "ssh ID [-- COMMAND…]",
		Short: "Open a shell on a pod (direct SSH when it has a public IP, RunPod's PTY gateway otherwise) or an SSH host, or run COMMAND",
		Long: "Direct SSH to the pod's public IP and mapped port 22 when it has them (a full SSH: exec,\n" +
			"SFTP); otherwise RunPod's gateway {podId}-{suffix}@ssh.runpod.io, which offers only a\n" +
			"terminal: an interactive shell through `ssh -tt`, and COMMAND typed into that terminal\n" +
			"(its output and exit status come back). $" + EnvSSHGateway + " overrides the gateway.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if d := cmd.ArgsLenAtDash(); (d < 0 && len(args) > 1) || d > 1 {
				return usageError("usage: scopectl pod ssh ID [-- COMMAND…]")
			}
			ctx := cmd.Context()
			c, id, err := a.podTarget(ctx, args[0], rf)
			if err != nil {
				return err
			}
			_, isHost := c.(*sshhost.Provider)
			if isHost && viaGateway {
				return usageError("--gateway is RunPod's; %s is an SSH host", args[0])
			}
			p, err := c.Get(ctx, id)
			if err != nil {
				return notFound(err)
			}
			command := args[1:]
			// A command on an SSH host runs over scopectl's own SSH (its host-key checks).
			if host, port, ok := p.SSH(); ok && !viaGateway && !(isHost && len(command) > 0) {
				user := cmp.Or(p.SSHUser, "root")
				argv := []string{"-p", strconv.Itoa(port), user + "@" + host}
				if len(command) > 0 {
					argv = append(append(argv, "--"), command...)
				}
				return a.execSSH(ctx, rf, argv, len(command) == 0, fmt.Sprintf("%s@%s port %d", user, host, port))
			}
			if len(command) == 0 {
				if p.Status != provider.StatusRunning {
					return fmt.Errorf("pod %s is %s: start it first (scopectl pod start %s)", p.ID, p.Status, p.ID)
				}
				l, err := podGateway(ctx, c, p)
				if err != nil {
					return err
				}
				return a.execSSH(ctx, rf, []string{"-tt", "-p", strconv.Itoa(l.Port), l.User + "@" + l.Host}, true, l.String()+" (a terminal only: ssh -tt)")
			}
			r, run, err := a.podRunner(ctx, c, p, rf, !isHost)
			if err != nil {
				return err
			}
			defer r.Close()
			// In a subshell: an `exit` in COMMAND ends it, not the terminal's shell.
			out, code, err := run.Run(ctx, "("+strings.Join(command, " ")+"\n)")
			io.WriteString(a.stdout, out)
			if err != nil {
				return err
			}
			if code != 0 {
				return withCode(code, errSilent)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&viaGateway, "gateway", false, "use RunPod's PTY gateway even when the pod has a public IP")
	rf.add(cmd)
	return cmd
}

// execSSH runs OpenSSH's ssh; its exit status becomes ours. An interactive session gets
// the terminal itself; a command's output goes through scopectl's (redacting) writers.
// ssh checks host keys against the same known_hosts as scopectl's own SSH (--known-hosts,
// else $HOME/.ssh/known_hosts) and accepts a new one only with --accept-new-host-key.
func (a *app) execSSH(ctx context.Context, rf remoteFlags, argv []string, interactive bool, where string) error {
	ssh, err := exec.LookPath("ssh")
	if err != nil {
		return fmt.Errorf("no ssh client on PATH; connect to %s", where)
	}
	argv = append(sshOptions(rf, interactive), argv...)
	sc := exec.CommandContext(ctx, ssh, argv...)
	sc.Stdin, sc.Stdout, sc.Stderr = os.Stdin, a.stdout, a.stderr
	if interactive {
		sc.Stdout, sc.Stderr = os.Stdout, os.Stderr
	}
	err = sc.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() > 0 {
		return withCode(ee.ExitCode(), errSilent)
	}
	return err
}

// sshOptions are OpenSSH options that make it check what scopectl's own SSH checks. An
// unknown host key is refused unless --accept-new-host-key, except in a terminal, where
// ssh asks and the user answers. OpenSSH finds ~/.ssh through the account's passwd entry,
// scopectl through $HOME: where the two differ (a sandbox, a test), the identity under
// $HOME is named too.
func sshOptions(rf remoteFlags, interactive bool) []string {
	home, _ := os.UserHomeDir() // $HOME
	kh := rf.knownHosts
	if kh == "" {
		kh = filepath.Join(home, ".ssh", "known_hosts")
	}
	opts := []string{"-o", "UserKnownHostsFile=" + kh}
	switch {
	case rf.acceptNewHostKey:
		opts = append(opts, "-o", "StrictHostKeyChecking=accept-new")
	case !interactive:
		opts = append(opts, "-o", "StrictHostKeyChecking=yes")
	}
	if u, err := user.Current(); err == nil && u.HomeDir != "" && filepath.Clean(u.HomeDir) != filepath.Clean(home) {
		for _, k := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			if p := filepath.Join(home, ".ssh", k); fileExists(p) {
				opts = append(opts, "-i", p)
			}
		}
	}
	return opts
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}
