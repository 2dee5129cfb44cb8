package testkit

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"testing"
	"time"
)

// StartSSHD runs a real OpenSSH sshd on 127.0.0.1 for one test and returns its port. It
// puts a client key in home/.ssh/id_ed25519 (authorized for the current user) and the
// server's host key in home/.ssh/known_hosts; extra is more sshd_config lines (a
// ForceCommand, a SetEnv PATH=…, a ChrootDirectory). Sessions get HOME=home (SSHDHome).
// The server is stopped when the test ends, and dies with the test binary.
func StartSSHD(t testing.TB, home, extra string) int {
	t.Helper()
	NeedFile(t, "/usr/sbin/sshd", "openssh-server")
	NeedCommand(t, "ssh-keygen", "openssh-client")
	dir := t.TempDir()
	keygen := func(path string) {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v %s", err, out)
		}
	}
	keygen(filepath.Join(dir, "host"))
	if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(home, ".ssh", "id_ed25519")); err != nil {
		keygen(filepath.Join(home, ".ssh", "id_ed25519"))
	}
	pub, err := os.ReadFile(filepath.Join(home, ".ssh", "id_ed25519.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		os.MkdirAll("/run/sshd", 0o755) // privilege separation folder, as Debian's service makes it
	}
	for attempt := 0; ; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		cfg := fmt.Sprintf("Port %d\nListenAddress 127.0.0.1\nHostKey %s\nAuthorizedKeysFile %s\nPidFile %s\nStrictModes no\nUsePAM no\n"+
			"PasswordAuthentication no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\nMaxSessions 50\nMaxStartups 50\nLogLevel ERROR\n",
			port, filepath.Join(dir, "host"), filepath.Join(dir, "authorized_keys"), filepath.Join(dir, "pid")) + SSHDHome(home, extra)
		cfgPath := filepath.Join(dir, "sshd_config")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		var log SyncBuffer
		cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", cfgPath)
		cmd.Stderr = &log
		KillWithParent(cmd)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() {
			cmd.Process.Kill()
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
			}
		}
		if waitListening(port, exited) {
			t.Cleanup(func() {
				stop()
				if t.Failed() && log.String() != "" {
					t.Logf("sshd log:\n%s", log.String())
				}
			})
			hostPub, err := os.ReadFile(filepath.Join(dir, "host.pub"))
			if err != nil {
				t.Fatal(err)
			}
			line := fmt.Sprintf("[127.0.0.1]:%d %s", port, hostPub)
			if err := os.WriteFile(filepath.Join(home, ".ssh", "known_hosts"), []byte(line), 0o600); err != nil {
				t.Fatal(err)
			}
			return port
		}
		stop()
		if attempt == 2 { // another process took the port between Close and sshd's bind
			t.Fatalf("sshd did not start:\n%s", log.String())
		}
	}
}

// waitListening waits (bounded) until 127.0.0.1:port accepts, or the server exited.
func waitListening(port int, exited <-chan struct{}) bool {
	for range 200 {
		select {
		case <-exited:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
			c.Close()
			return true
		}
		time.Sleep(25 * time.Millisecond)
	}
	return false
}

// User is the account a test sshd lets in: the one running the tests (root in CI, the
// developer elsewhere), for ssh://USER@127.0.0.1:PORT targets.
func User() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "root"
}
