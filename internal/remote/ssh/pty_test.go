package ssh

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/remote/remotetest"
	"github.com/daydreamlive/scopectl/internal/testkit"
)

// gateway starts an sshd that behaves like RunPod's ssh.runpod.io: every session runs a
// forced command that refuses to work without a terminal (so exec, SCP and SFTP fail),
// prints a banner, and gives an interactive bash.
func gateway(t *testing.T) *server {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "gateway.sh")
	body := "#!/bin/sh\n" +
		"if [ ! -t 0 ]; then echo 'Error: Your SSH client doesn'\"'\"'t support PTY' >&2; exit 1; fi\n" +
		"echo 'Welcome to the test gateway. Enjoy!'\n" +
		"if command -v bash >/dev/null; then exec bash --norc -i; else exec sh -i; fi\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return startSSHD(t, sshdOpts{force: script})
}

func TestPTYGatewayConformance(t *testing.T) {
	testkit.NeedRoot(t, "a terminal from the test sshd (sshd chowns the pty to the login)")
	s := gateway(t)
	clientHome(t, s, true)
	var n int
	var current string
	remotetest.Run(t, func(t *testing.T) remote.Remote {
		n++
		current = filepath.Join(s.dir, "served", strconv.Itoa(n), "models", "lora")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		r, err := remote.Open(ctx, strings.Replace(s.url(current), "ssh://", "ssh+pty://", 1), remote.Env{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}, remotetest.Options{
		Resumes: true,
		Peek: func(t *testing.T) []string {
			des, _ := os.ReadDir(current)
			var names []string
			for _, de := range des {
				names = append(names, de.Name())
			}
			return names
		},
	})
}

// The plain ssh:// backend cannot use such a gateway and says what to use instead.
func TestPTYGatewayRefusesExec(t *testing.T) {
	s := gateway(t)
	clientHome(t, s, true)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := remote.Open(ctx, s.url(filepath.Join(s.dir, "served", "x")), remote.Env{})
	if err == nil || !strings.Contains(err.Error(), "ssh+pty://") {
		t.Fatalf("ssh:// on a PTY-only gateway: %v", err)
	}
}
