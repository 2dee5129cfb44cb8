// Package guardtest has what the guard's end-to-end tests share: the laptop's SSH key
// that every test machine's sshd lets in, and ending a guard a test started (only a
// live `scopectl guard` process whose command line names its folder).
package guardtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/testkit"
)

// Laptop is the machine scopectl runs on: its SSH key (every pod's sshd authorizes it).
type Laptop struct {
	Home string
	key  []byte
	pub  []byte
}

func NewLaptop(t testing.TB) *Laptop {
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	k := filepath.Join(home, ".ssh", "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k).CombinedOutput(); err != nil {
		testkit.Need(t, false, fmt.Sprintf("ssh-keygen: %v %s", err, out))
	}
	l := &Laptop{Home: home}
	l.key, _ = os.ReadFile(k)
	l.pub, _ = os.ReadFile(k + ".pub")
	t.Setenv("HOME", home) // scopectl's SSH finds its key under $HOME/.ssh
	t.Setenv("SSH_AUTH_SOCK", "")
	return l
}

// MachineHome gives a machine's sshd the laptop's key (StartSSHD authorizes the key it
// finds there) and returns where its known_hosts will be.
func (l *Laptop) MachineHome(t testing.TB, dir string) string {
	os.MkdirAll(filepath.Join(dir, ".ssh"), 0o700)
	os.WriteFile(filepath.Join(dir, ".ssh", "id_ed25519"), l.key, 0o600)
	os.WriteFile(filepath.Join(dir, ".ssh", "id_ed25519.pub"), l.pub, 0o644)
	return filepath.Join(dir, ".ssh", "known_hosts")
}

// GuardPID is the pid in a guard's lock file, when it is a live `scopectl guard`
// process whose command line names dir (never anything else).
func GuardPID(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "guard.lock"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmd), "guard") || !strings.Contains(string(cmd), dir) {
		return 0
	}
	return pid
}

// KillGuard ends the guard that holds dir's lock (as a pod's stop ends every process in
// it) and waits, bounded, until it is gone.
func KillGuard(dir string) {
	pid := GuardPID(dir)
	if pid == 0 {
		return
	}
	syscall.Kill(pid, syscall.SIGKILL)
	for range 100 {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FreePort is a TCP port on loopback that nothing listened on a moment ago.
func FreePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// FakeSMI writes an nvidia-smi that reports one GPU at $FAKE_GPU_UTIL percent (0 unset)
// and returns its folder, for the PATH.
func FakeSMI(t testing.TB) string {
	dir := t.TempDir()
	script := "#!/bin/sh\necho \"0, GPU-fake, NVIDIA GeForce RTX 4090, 1000, 24564, ${FAKE_GPU_UTIL:-0}, 40, 60.5, 450.0, 550.54\"\n"
	if err := os.WriteFile(filepath.Join(dir, "nvidia-smi"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
