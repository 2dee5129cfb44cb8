package ssh

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/remote/remotetest"
	"github.com/daydreamlive/scopectl/internal/testkit"
)

const sshdPath = "/usr/sbin/sshd"

type sshdOpts struct {
	sftp      bool   // Subsystem sftp internal-sftp
	sftpOnly  bool   // ForceCommand internal-sftp: no sh commands
	ecdsaHost bool   // a second host key (ecdsa) besides ed25519
	force     string // ForceCommand (a PTY-only gateway)
}

// server is a real OpenSSH sshd on 127.0.0.1, run for one test.
type server struct {
	port      int
	dir       string           // its files; served folders go under dir/served
	hostKeys  []xssh.PublicKey // ed25519 first
	clientKey string           // private key (no passphrase) that authorized_keys accepts
	user      string           // the account to log in as (the one running the test)
	log       *syncBuffer      // sshd's stderr
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testkit.SyncBuffer

func need(t *testing.T, bins ...string) {
	t.Helper()
	for _, b := range bins {
		if _, err := os.Stat(b); err == nil {
			continue
		}
		_, err := exec.LookPath(b)
		testkit.Need(t, err == nil, b+" is not installed (Debian: apt-get install openssh-server openssh-client)")
	}
}

func keygen(t *testing.T, path, typ string, extra ...string) xssh.PublicKey {
	t.Helper()
	args := append([]string{"-q", "-t", typ, "-N", "", "-C", "scopectl-test", "-f", path}, extra...)
	if out, err := exec.Command("ssh-keygen", args...).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen %v: %v\n%s", args, err, out)
	}
	b, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	k, _, _, _, err := xssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func currentUser(t *testing.T) string {
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startSSHD(t *testing.T, o sshdOpts) *server {
	t.Helper()
	need(t, sshdPath, "ssh-keygen")
	dir := t.TempDir()
	s := &server{dir: dir, user: currentUser(t), log: &syncBuffer{}}
	s.hostKeys = append(s.hostKeys, keygen(t, filepath.Join(dir, "host_ed25519"), "ed25519"))
	hostKeyLines := "HostKey " + filepath.Join(dir, "host_ed25519") + "\n"
	if o.ecdsaHost {
		s.hostKeys = append(s.hostKeys, keygen(t, filepath.Join(dir, "host_ecdsa"), "ecdsa"))
		hostKeyLines += "HostKey " + filepath.Join(dir, "host_ecdsa") + "\n"
	}
	s.clientKey = filepath.Join(dir, "client_ed25519")
	keygen(t, s.clientKey, "ed25519")
	pub, err := os.ReadFile(s.clientKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "served"), 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		os.MkdirAll("/run/sshd", 0o755) // privilege separation directory, as the Debian package's service makes it
	}
	for attempt := 0; ; attempt++ {
		s.port = freePort(t)
		cfg := fmt.Sprintf("Port %d\nListenAddress 127.0.0.1\n%sAuthorizedKeysFile %s\nPidFile %s\n"+
			"StrictModes no\nUsePAM no\nPubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"+
			"PermitRootLogin prohibit-password\nMaxSessions 50\nMaxStartups 50\nLogLevel ERROR\n",
			s.port, hostKeyLines, filepath.Join(dir, "authorized_keys"), filepath.Join(dir, "sshd.pid")) + testkit.SSHDHome(dir, "")
		if o.sftp {
			cfg += "Subsystem sftp internal-sftp\n"
		}
		if o.sftpOnly {
			cfg += "ForceCommand internal-sftp\n"
		}
		if o.force != "" {
			cfg += "ForceCommand " + o.force + "\n"
		}
		cfgPath := filepath.Join(dir, "sshd_config")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(sshdPath, "-D", "-e", "-f", cfgPath)
		testkit.KillWithParent(cmd)
		cmd.Stderr = s.log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() {
			stopChildren(cmd.Process.Pid)
			cmd.Process.Kill()
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				t.Errorf("sshd pid %d did not exit", cmd.Process.Pid)
			}
		}
		if waitReady(s.port, exited) {
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("sshd log:\n%s", s.log.String())
				}
			})
			return s
		}
		stop()
		if attempt == 2 {
			t.Fatalf("sshd did not start:\n%s", s.log.String())
		}
	}
}

// stopChildren gives sshd's per-connection processes up to 2 s to end (the clients have
// closed their connections) so that sshd reaps them, then kills those left, by pid.
func stopChildren(pid int) {
	children := func() []int {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if err != nil {
			return nil
		}
		var out []int
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
		return out
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(children()) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	for _, c := range children() {
		if p, err := os.FindProcess(c); err == nil {
			p.Kill()
		}
	}
	// Let sshd reap them before it goes.
	for i := 0; i < 50 && len(children()) > 0; i++ {
		time.Sleep(20 * time.Millisecond)
	}
}

// waitReady waits (at most 10 s) until sshd sends its banner.
func waitReady(port int, exited chan struct{}) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "SSH-2.0-") {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func (s *server) hostport() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// url names folder (under the served dir) on the server.
func (s *server) url(folder string) string {
	return fmt.Sprintf("ssh://%s@127.0.0.1:%d%s", s.user, s.port, folder)
}

// clientHome makes an isolated $HOME with the client key as ~/.ssh/id_ed25519 and, if
// trust, the server's host key in ~/.ssh/known_hosts. SSH_AUTH_SOCK is cleared.
func clientHome(t *testing.T, s *server, trust bool) string {
	t.Helper()
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if s != nil {
		copyFile(t, s.clientKey, filepath.Join(home, ".ssh", "id_ed25519"))
		if trust {
			line := knownhosts.Line([]string{knownhosts.Normalize(s.hostport())}, s.hostKeys[0]) + "\n"
			if err := os.WriteFile(filepath.Join(home, ".ssh", "known_hosts"), []byte(line), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Setenv("HOME", home)
	t.Setenv("SSH_AUTH_SOCK", "")
	return home
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func open(t *testing.T, raw string, env remote.Env) *Remote {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := remote.Open(ctx, raw, env)
	if err != nil {
		t.Fatal(err)
	}
	return r.(*Remote)
}

func conformance(t *testing.T, o sshdOpts) {
	s := startSSHD(t, o)
	clientHome(t, s, true)
	var n int
	var current string
	remotetest.Run(t, func(t *testing.T) remote.Remote {
		n++
		current = filepath.Join(s.dir, "served", strconv.Itoa(n), "models", "lora") // made by Open
		r := open(t, s.url(current), remote.Env{})
		if r.useSFTP != o.sftp {
			t.Fatalf("useSFTP = %v with sftp %v", r.useSFTP, o.sftp)
		}
		return r
	}, remotetest.Options{
		Resumes: true,
		Peek: func(t *testing.T) []string {
			des, err := os.ReadDir(current)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, de := range des {
				names = append(names, de.Name())
			}
			return names
		},
	})
	// Which way each step went.
	r := open(t, s.url(filepath.Join(s.dir, "served", "mode")), remote.Env{})
	defer r.Close()
	b, sum := remotetest.Data(1000, 1)
	if _, err := r.Put(context.Background(), "x.safetensors", remotetest.Src(b, sum), remote.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if r.useSFTP != o.sftp || r.noExec.Load() != o.sftpOnly {
		t.Fatalf("useSFTP %v, noExec %v", r.useSFTP, r.noExec.Load())
	}
}

func TestConformanceSFTP(t *testing.T) { conformance(t, sshdOpts{sftp: true}) }

// No sftp subsystem: everything goes through sh commands over exec.
func TestConformanceExec(t *testing.T) { conformance(t, sshdOpts{}) }

// An sftp-only account (ForceCommand internal-sftp): no sha256sum on the far side, so
// verification reads back over SFTP and publishing uses posix-rename.
func TestConformanceSFTPOnly(t *testing.T) { conformance(t, sshdOpts{sftp: true, sftpOnly: true}) }

// Names and folders with quotes, spaces and $(...) stay data, in both transports.
func TestQuoting(t *testing.T) {
	for _, sftpOn := range []bool{true, false} {
		t.Run(fmt.Sprintf("sftp=%v", sftpOn), func(t *testing.T) {
			s := startSSHD(t, sshdOpts{sftp: sftpOn})
			clientHome(t, s, true)
			folder := filepath.Join(s.dir, "served", `it's a "dir" $(touch pwned1)`, "-n")
			r := open(t, s.url(folder), remote.Env{})
			defer r.Close()
			ctx := context.Background()
			name := `a 'b' $(touch pwned2) ;x` + "`touch pwned3`" + `.safetensors`
			b, sum := remotetest.Data(100000, 9)
			if _, err := r.Put(ctx, name, remotetest.Src(b, sum), remote.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(folder, name))
			if err != nil || !bytes.Equal(got, b) {
				t.Fatalf("file on the server: %v", err)
			}
			es, err := r.List(ctx)
			if err != nil || len(es) != 1 || es[0].Name != name || es[0].Size != int64(len(b)) || es[0].ModTime.IsZero() {
				t.Fatalf("List: %+v %v", es, err)
			}
			if h, err := r.Hash(ctx, name); err != nil || h != sum {
				t.Fatalf("Hash: %s %v", h, err)
			}
			rc, err := r.Get(ctx, name, 99990)
			if err != nil {
				t.Fatal(err)
			}
			tail, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(tail, b[99990:]) {
				t.Fatalf("Get from offset: %d bytes, %v", len(tail), err)
			}
			if err := r.Delete(ctx, name); err != nil {
				t.Fatal(err)
			}
			for _, d := range []string{"/", os.Getenv("HOME"), "/root", s.dir, folder} {
				for _, p := range []string{"pwned1", "pwned2", "pwned3"} {
					if _, err := os.Stat(filepath.Join(d, p)); err == nil {
						t.Fatalf("a name was run as a command: %s exists", filepath.Join(d, p))
					}
				}
			}
		})
	}
}

// A temporary file that is not a prefix of the content, or is longer than it, does not
// end up published: the upload starts over.
func TestBadPartialStartsOver(t *testing.T) {
	for _, sftpOn := range []bool{true, false} {
		t.Run(fmt.Sprintf("sftp=%v", sftpOn), func(t *testing.T) {
			s := startSSHD(t, sshdOpts{sftp: sftpOn})
			clientHome(t, s, true)
			folder := filepath.Join(s.dir, "served", "f")
			r := open(t, s.url(folder), remote.Env{})
			defer r.Close()
			ctx := context.Background()
			b, sum := remotetest.Data(200000, 10)
			tmp := filepath.Join(folder, remote.TempName("x.safetensors", sum))

			garbage, _ := remotetest.Data(50000, 11)
			os.WriteFile(tmp, garbage, 0o644)
			res, err := r.Put(ctx, "x.safetensors", remotetest.Src(b, sum), remote.PutOptions{})
			if err != nil {
				t.Fatal(err)
			}
			// 150000 bytes after the 50000 there, then the mismatch, then all 200000.
			if res.Resumed != 0 || res.Sent != 150000+200000 {
				t.Fatalf("after a bad partial: %+v", res)
			}
			if got, _ := os.ReadFile(filepath.Join(folder, "x.safetensors")); !bytes.Equal(got, b) {
				t.Fatal("published other bytes")
			}

			long, _ := remotetest.Data(300000, 12)
			os.WriteFile(tmp, long, 0o644)
			res, err = r.Put(ctx, "x.safetensors", remotetest.Src(b, sum), remote.PutOptions{})
			if err != nil || res.Resumed != 0 || res.Sent != 200000 {
				t.Fatalf("after a too long partial: %+v %v", res, err)
			}
			if got, _ := os.ReadFile(filepath.Join(folder, "x.safetensors")); !bytes.Equal(got, b) {
				t.Fatal("published other bytes")
			}
			if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("temporary file left: %v", err)
			}

			// A directory where the file should go is not moved into or replaced.
			os.Mkdir(filepath.Join(folder, "d.safetensors"), 0o755)
			if _, err := r.Put(ctx, "d.safetensors", remotetest.Src(b, sum), remote.PutOptions{}); err == nil {
				t.Fatal("Put over a directory succeeded")
			}
			if des, _ := os.ReadDir(filepath.Join(folder, "d.safetensors")); len(des) != 0 {
				t.Fatalf("moved into the directory: %v", des)
			}
			if err := r.Delete(ctx, "d.safetensors"); err == nil || errors.Is(err, remote.ErrNotFound) {
				t.Fatalf("Delete of a directory: %v", err)
			}
		})
	}
}

func TestUnknownHostKey(t *testing.T) {
	s := startSSHD(t, sshdOpts{sftp: true})
	home := clientHome(t, s, false)
	kh := filepath.Join(home, ".ssh", "known_hosts")
	folder := filepath.Join(s.dir, "served", "u")
	ctx := context.Background()

	_, err := remote.Open(ctx, s.url(folder), remote.Env{})
	if !errors.Is(err, ErrUnknownHostKey) {
		t.Fatalf("unknown host key: %v", err)
	}
	msg := err.Error()
	fp := xssh.FingerprintSHA256(s.hostKeys[0])
	if !strings.Contains(msg, fp) || !strings.Contains(msg, "--accept-new-host-key") || strings.Contains(msg, "\n") {
		t.Fatalf("message should be one line with %s and the flag: %s", fp, msg)
	}
	if _, err := os.Stat(kh); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("known_hosts written without consent: %v", err)
	}
	if _, err := os.Stat(folder); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the folder was made on an unverified server")
	}

	r := open(t, s.url(folder), remote.Env{AcceptNewHostKey: true})
	r.Close()
	b, err := os.ReadFile(kh)
	if err != nil {
		t.Fatal(err)
	}
	want := knownhosts.Line([]string{"[127.0.0.1]:" + strconv.Itoa(s.port)}, s.hostKeys[0])
	if strings.TrimSpace(string(b)) != want {
		t.Fatalf("known_hosts:\n%s\nwant:\n%s", b, want)
	}
	// Known now: no flag needed, and nothing more is added.
	r = open(t, s.url(folder), remote.Env{})
	r.Close()
	if b2, _ := os.ReadFile(kh); !bytes.Equal(b, b2) {
		t.Fatalf("known_hosts changed again:\n%s", b2)
	}
	// Env.KnownHosts names another file.
	other := filepath.Join(t.TempDir(), "kh")
	if _, err := remote.Open(ctx, s.url(folder), remote.Env{KnownHosts: other}); !errors.Is(err, ErrUnknownHostKey) || !strings.Contains(err.Error(), other) {
		t.Fatalf("Env.KnownHosts ignored: %v", err)
	}
}

func TestChangedHostKeyRefused(t *testing.T) {
	s := startSSHD(t, sshdOpts{sftp: true})
	home := clientHome(t, s, false)
	kh := filepath.Join(home, ".ssh", "known_hosts")
	impostor := keygen(t, filepath.Join(t.TempDir(), "old"), "ed25519")
	content := "# comment\n" + knownhosts.Line([]string{knownhosts.Normalize(s.hostport())}, impostor) + "\n"
	os.WriteFile(kh, []byte(content), 0o600)
	for _, accept := range []bool{false, true} {
		_, err := remote.Open(context.Background(), s.url(filepath.Join(s.dir, "served", "c")), remote.Env{AcceptNewHostKey: accept})
		if !errors.Is(err, ErrHostKeyChanged) {
			t.Fatalf("changed host key (accept-new %v): %v", accept, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, xssh.FingerprintSHA256(s.hostKeys[0])) || !strings.Contains(msg, kh+":2") || !strings.Contains(msg, "man-in-the-middle") || strings.Contains(msg, "\n") {
			t.Fatalf("message: %s", msg)
		}
	}
	if b, _ := os.ReadFile(kh); string(b) != content {
		t.Fatalf("known_hosts was modified:\n%s", b)
	}
}

// A server with ed25519 and ecdsa host keys, of which known_hosts has only the ecdsa one,
// is recognised (OpenSSH-style: only known key types are negotiated), not taken for a
// changed key.
func TestKnownKeyTypeNegotiated(t *testing.T) {
	s := startSSHD(t, sshdOpts{sftp: true, ecdsaHost: true})
	home := clientHome(t, s, false)
	line := knownhosts.Line([]string{knownhosts.Normalize(s.hostport())}, s.hostKeys[1]) + "\n"
	os.WriteFile(filepath.Join(home, ".ssh", "known_hosts"), []byte(line), 0o600)
	r := open(t, s.url(filepath.Join(s.dir, "served", "k")), remote.Env{})
	r.Close()
}

func startAgent(t *testing.T) string {
	t.Helper()
	need(t, "ssh-agent", "ssh-add")
	sock := filepath.Join(t.TempDir(), "agent.sock")
	cmd := exec.Command("ssh-agent", "-D", "-a", sock)
	testkit.KillWithParent(cmd)
	var log syncBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("ssh-agent pid %d did not exit", cmd.Process.Pid)
		}
	})
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("ssh-agent made no socket: %s", log.String())
	return ""
}

func sshAdd(t *testing.T, sock, key string) {
	t.Helper()
	cmd := exec.Command("ssh-add", key)
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v\n%s", err, out)
	}
}

func TestAgentAuth(t *testing.T) {
	s := startSSHD(t, sshdOpts{sftp: true})
	home := clientHome(t, s, true)
	os.Remove(filepath.Join(home, ".ssh", "id_ed25519")) // no identity files at all
	folder := filepath.Join(s.dir, "served", "a")

	_, err := remote.Open(context.Background(), s.url(folder), remote.Env{})
	if err == nil || !strings.Contains(err.Error(), "no usable SSH key") {
		t.Fatalf("without keys: %v", err)
	}

	sock := startAgent(t)
	// An unrelated key first, as agents often hold several.
	other := filepath.Join(t.TempDir(), "other")
	keygen(t, other, "ed25519")
	sshAdd(t, sock, other)
	sshAdd(t, sock, s.clientKey)
	t.Setenv("SSH_AUTH_SOCK", sock)
	r := open(t, s.url(folder), remote.Env{})
	defer r.Close()
	b, sum := remotetest.Data(1000, 1)
	if _, err := r.Put(context.Background(), "x.safetensors", remotetest.Src(b, sum), remote.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestPassphraseProtectedKey(t *testing.T) {
	need(t, "ssh-keygen")
	s := startSSHD(t, sshdOpts{sftp: true})
	home := clientHome(t, s, true)
	id := filepath.Join(home, ".ssh", "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-p", "-P", "", "-N", "correct horse", "-f", id).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -p: %v\n%s", err, out)
	}
	folder := filepath.Join(s.dir, "served", "p")
	_, err := remote.Open(context.Background(), s.url(folder), remote.Env{})
	if err == nil || !strings.Contains(err.Error(), "passphrase-protected") || !strings.Contains(err.Error(), "ssh-add "+id) {
		t.Fatalf("passphrase-protected key: %v", err)
	}
	// With the key in the agent the file is skipped without complaint.
	sock := startAgent(t)
	sshAdd(t, sock, s.clientKey)
	t.Setenv("SSH_AUTH_SOCK", sock)
	r := open(t, s.url(folder), remote.Env{})
	r.Close()
}

func TestConfigAlias(t *testing.T) {
	s := startSSHD(t, sshdOpts{})
	home := clientHome(t, s, true)
	os.Rename(filepath.Join(home, ".ssh", "id_ed25519"), filepath.Join(home, ".ssh", "pod_key"))
	// A default key that the server does not accept: IdentityFile must win.
	keygen(t, filepath.Join(home, ".ssh", "id_rsa"), "rsa", "-b", "2048")
	cfg := fmt.Sprintf("Host other\n  Port 1\n\nHost mypod *.pods\n  HostName 127.0.0.1\n  Port %d\n  User %s\n  IdentityFile ~/.ssh/pod_key\n  IdentitiesOnly yes\n\nHost *\n  User nobody-else\n", s.port, s.user)
	os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte(cfg), 0o600)
	folder := filepath.Join(s.dir, "served", "alias")
	r := open(t, "ssh://mypod"+folder, remote.Env{})
	defer r.Close()
	if want := fmt.Sprintf("ssh://%s@mypod:%d%s", s.user, s.port, folder); r.String() != want {
		t.Fatalf("String() = %q, want %q", r.String(), want)
	}
	if _, err := os.Stat(folder); err != nil {
		t.Fatalf("folder not made: %v", err)
	}
	// The URL's user and port win over the config.
	_, err := remote.Open(context.Background(), "ssh://nosuchuser@mypod"+folder, remote.Env{})
	if err == nil || !strings.Contains(err.Error(), `"nosuchuser"`) {
		t.Fatalf("URL user: %v", err)
	}
}

func TestURLs(t *testing.T) {
	clientHome(t, nil, false)
	for raw, want := range map[string]string{
		"ssh://u:secret@h/x": "passwords",
		"ssh:///x":           "no host",
		"ssh://h:0/x":        "bad port",
		"ssh://h/x?key=v":    "no ?query",
	} {
		_, err := remote.Open(context.Background(), raw, remote.Env{})
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: %v", raw, err)
		}
	}
	for p, want := range map[string]string{"": ".", "/~": ".", "/~/a/b": "a/b", "/workspace/models/lora/": "/workspace/models/lora", "/": "/"} {
		if got := folder(p); got != want {
			t.Errorf("folder(%q) = %q, want %q", p, got, want)
		}
	}
	u, _ := url.Parse("ssh://pod")
	tg, err := resolve(u, t.TempDir())
	if err != nil || tg.port != 22 || tg.host != "pod" || tg.user == "" {
		t.Errorf("defaults: %+v %v", tg, err)
	}
}

func setVar[T any](t *testing.T, p *T, v T) {
	old := *p
	*p = v
	t.Cleanup(func() { *p = old })
}

// A server that accepts TCP connections but never speaks gives a timeout error within
// the connect timeout, not a hang; a cancelled context ends the wait sooner.
func TestStalledServerTimesOut(t *testing.T) {
	clientHome(t, nil, false)
	home := os.Getenv("HOME")
	keygen(t, filepath.Join(home, ".ssh", "id_ed25519"), "ed25519")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	var mu sync.Mutex
	var held []net.Conn
	conns.Add(1)
	go func() {
		defer conns.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		conns.Wait()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	raw := fmt.Sprintf("ssh://root@%s/x", l.Addr())

	setVar(t, &connectTimeout, 2*time.Second)
	start := time.Now()
	_, err = remote.Open(context.Background(), raw, remote.Env{})
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "timeout") || took > 6*time.Second || took < time.Second {
		t.Fatalf("after %s: %v", took, err)
	}

	// The connect-timeout option.
	start = time.Now()
	_, err = remote.Open(context.Background(), raw, remote.Env{Options: map[string]string{"connect-timeout": "500ms"}})
	if took := time.Since(start); err == nil || took > 4*time.Second {
		t.Fatalf("connect-timeout 500ms: after %s: %v", took, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = remote.Open(ctx, raw, remote.Env{})
	if took := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || took > 1500*time.Millisecond {
		t.Fatalf("cancelled after %s: %v", took, err)
	}
}

// proxy forwards TCP to addr; freeze stops it forwarding anything, like a dead link.
type proxy struct {
	l      net.Listener
	frozen atomic.Bool
	closed atomic.Bool
	link   *link // nil: no delay or rate limit
}

func startProxy(t *testing.T, addr string, lk *link) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, link: lk}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, d)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); p.pipe(d, c) }()
			go func() { defer wg.Done(); p.pipe(c, d) }()
		}
	}()
	t.Cleanup(func() {
		p.closed.Store(true)
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return p
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	if p.link != nil {
		p.link.pipe(dst, src)
		return
	}
	b := make([]byte, 32<<10)
	for {
		n, err := src.Read(b)
		for p.frozen.Load() && !p.closed.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		if n > 0 {
			if _, err := dst.Write(b[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// A peer that stops answering mid-session fails operations through the keepalive
// instead of hanging them.
func TestStalledPeerKeepalive(t *testing.T) {
	s := startSSHD(t, sshdOpts{sftp: true})
	home := clientHome(t, s, true)
	p := startProxy(t, s.hostport(), nil)
	port := p.l.Addr().(*net.TCPAddr).Port
	line := knownhosts.Line([]string{knownhosts.Normalize(p.l.Addr().String())}, s.hostKeys[0]) + "\n"
	os.WriteFile(filepath.Join(home, ".ssh", "known_hosts"), []byte(line), 0o600)
	setVar(t, &keepaliveInterval, 200*time.Millisecond)
	setVar(t, &keepaliveCountMax, 3)
	r := open(t, fmt.Sprintf("ssh://%s@127.0.0.1:%d%s", s.user, port, filepath.Join(s.dir, "served", "k")), remote.Env{})
	defer r.Close()
	if _, err := r.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // keepalives answered meanwhile do not close it
	if _, err := r.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.frozen.Store(true)
	t.Cleanup(func() { p.frozen.Store(false) })
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		b, sum := remotetest.Data(1<<20, 3)
		_, err := r.Put(context.Background(), "x.safetensors", remotetest.Src(b, sum), remote.PutOptions{})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "keepalive") {
			t.Fatalf("after %s: %v", time.Since(start), err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Put on a stalled connection hung for 10 s")
	}
}

// link emulates a slow, distant network: each direction serialises at rate bytes/s and
// delivers after delay.
type link struct {
	delay time.Duration
	rate  float64
}

func (l *link) pipe(dst, src net.Conn) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	ch := make(chan chunk, 1<<16)
	go func() {
		defer close(ch)
		for {
			b := make([]byte, 16<<10)
			n, err := src.Read(b)
			if n > 0 {
				ch <- chunk{b[:n], time.Now()}
			}
			if err != nil {
				return
			}
		}
	}()
	var free time.Time
	for c := range ch {
		if c.at.After(free) {
			free = c.at
		}
		free = free.Add(time.Duration(float64(len(c.b)) / l.rate * float64(time.Second)))
		time.Sleep(time.Until(free.Add(l.delay)))
		if _, err := dst.Write(c.b); err != nil {
			return
		}
	}
}

// TestLinkThroughput measures one LoRA-sized Put over an emulated 100 Mbit/s, 40 ms RTT
// link. It takes a while, so it runs only with SCOPECTL_SSH_LINK=1
// (SCOPECTL_SSH_LINK_MB sets the size, default 147).
func TestLinkThroughput(t *testing.T) {
	if os.Getenv("SCOPECTL_SSH_LINK") == "" {
		t.Skip("set SCOPECTL_SSH_LINK=1 to measure throughput over an emulated 100 Mbit/s, 40 ms link")
	}
	mb := 147
	if v, err := strconv.Atoi(os.Getenv("SCOPECTL_SSH_LINK_MB")); err == nil {
		mb = v
	}
	b, sum := remotetest.Data(mb<<20, 42)
	const rate = 100e6 / 8
	for _, sftpOn := range []bool{true, false} {
		t.Run(fmt.Sprintf("sftp=%v", sftpOn), func(t *testing.T) {
			s := startSSHD(t, sshdOpts{sftp: sftpOn})
			home := clientHome(t, s, true)
			p := startProxy(t, s.hostport(), &link{delay: 20 * time.Millisecond, rate: rate})
			line := knownhosts.Line([]string{knownhosts.Normalize(p.l.Addr().String())}, s.hostKeys[0]) + "\n"
			os.WriteFile(filepath.Join(home, ".ssh", "known_hosts"), []byte(line), 0o600)
			start := time.Now()
			r := open(t, fmt.Sprintf("ssh://%s@%s%s", s.user, p.l.Addr(), filepath.Join(s.dir, "served", "t")), remote.Env{})
			defer r.Close()
			opened := time.Now()
			res, err := r.Put(context.Background(), "big.safetensors", remotetest.Src(b, sum), remote.PutOptions{})
			if err != nil {
				t.Fatal(err)
			}
			took := time.Since(opened)
			ideal := time.Duration(float64(len(b)) / rate * float64(time.Second))
			t.Logf("%d MiB: connect %s, Put %s (sent %d), ideal %s: %.3f of the link", mb, opened.Sub(start).Round(time.Millisecond),
				took.Round(time.Millisecond), res.Sent, ideal.Round(time.Millisecond), ideal.Seconds()/took.Seconds())
		})
	}
}

// cancelAt cancels a context once the upload has read past limit.
type cancelAt struct {
	r      io.ReaderAt
	limit  int64
	cancel context.CancelFunc
}

func (c cancelAt) ReadAt(p []byte, off int64) (int, error) {
	if off > c.limit {
		c.cancel()
	}
	return c.r.ReadAt(p, off)
}

// Cancelling the context mid-upload stops it promptly; the part sent is resumed later.
func TestCancelMidPutResumes(t *testing.T) {
	for _, sftpOn := range []bool{true, false} {
		t.Run(fmt.Sprintf("sftp=%v", sftpOn), func(t *testing.T) {
			s := startSSHD(t, sshdOpts{sftp: sftpOn})
			clientHome(t, s, true)
			folder := filepath.Join(s.dir, "served", "c")
			r := open(t, s.url(folder), remote.Env{})
			defer r.Close()
			b, sum := remotetest.Data(24<<20, 13)
			ctx, cancelCtx := context.WithCancel(context.Background())
			defer cancelCtx()
			// Promptness counts from the cancel, not from the start: the 8 MiB before it
			// take as long as a loaded machine makes them.
			var cancelled atomic.Int64
			cancel := func() { cancelled.CompareAndSwap(0, time.Now().UnixNano()); cancelCtx() }
			_, err := r.Put(ctx, "c.safetensors", remote.Source{R: cancelAt{bytes.NewReader(b), 8 << 20, cancel}, Size: int64(len(b)), SHA256: sum}, remote.PutOptions{})
			after := time.Since(time.Unix(0, cancelled.Load()))
			if !errors.Is(err, context.Canceled) || cancelled.Load() == 0 || after > 10*time.Second {
				t.Fatalf("%s after the cancel: %v", after, err)
			}
			if _, err := os.Stat(filepath.Join(folder, "c.safetensors")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("published after cancel: %v", err)
			}
			// The connection still works, and the next Put continues.
			res, err := r.Put(context.Background(), "c.safetensors", remotetest.Src(b, sum), remote.PutOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Resumed == 0 || res.Resumed+res.Sent != int64(len(b)) {
				t.Fatalf("did not resume: %+v", res)
			}
			if got, _ := os.ReadFile(filepath.Join(folder, "c.safetensors")); !bytes.Equal(got, b) {
				t.Fatal("published other bytes")
			}
		})
	}
}

// A folder that cannot be made is an error at Open, in both transports.
func TestFolderCannotBeMade(t *testing.T) {
	for _, sftpOn := range []bool{true, false} {
		t.Run(fmt.Sprintf("sftp=%v", sftpOn), func(t *testing.T) {
			s := startSSHD(t, sshdOpts{sftp: sftpOn})
			clientHome(t, s, true)
			_, err := remote.Open(context.Background(), s.url(filepath.Join(s.dir, "authorized_keys", "sub")), remote.Env{})
			if err == nil || !strings.Contains(err.Error(), "mkdir") {
				t.Fatalf("folder under a file: %v", err)
			}
		})
	}
}

// bf16ish is n bytes shaped like bf16 weights: a random low byte, and a high byte
// (sign and exponent) drawn from a few values, so Huffman coding shrinks it as it does
// real LoRA tensors.
func bf16ish(n int, seed uint64) ([]byte, string) {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		if i%2 == 0 {
			b[i] = byte(rng.Uint32())
		} else {
			b[i] = 0x3b + byte(rng.IntN(4)) | byte(rng.IntN(2))<<7
		}
	}
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:])
}

// A large file that shrinks goes over exec as a gzip stream, also where SFTP is on; a
// cancelled compressed upload resumes; compress=off and incompressible data go as is.
func TestCompressedUpload(t *testing.T) {
	s := startSSHD(t, sshdOpts{sftp: true})
	clientHome(t, s, true)
	folder := filepath.Join(s.dir, "served", "z")
	r := open(t, s.url(folder), remote.Env{})
	defer r.Close()
	b, sum := bf16ish(12<<20, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := r.Put(ctx, "z.safetensors", remote.Source{R: cancelAt{bytes.NewReader(b), 5 << 20, cancel}, Size: int64(len(b)), SHA256: sum}, remote.PutOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled put: %v", err)
	}
	if _, err := os.Stat(filepath.Join(folder, "z.safetensors")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("published after cancel: %v", err)
	}
	res, err := r.Put(context.Background(), "z.safetensors", remotetest.Src(b, sum), remote.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(folder, "z.safetensors")); !bytes.Equal(got, b) {
		t.Fatal("published other bytes")
	}
	if res.Resumed == 0 || res.Resumed+res.Sent != int64(len(b)) {
		t.Fatalf("did not resume: %+v", res)
	}
	if res.Compressed == 0 || res.Compressed > res.Sent*9/10 {
		t.Fatalf("not compressed: %+v", res)
	}
	t.Logf("resumed %d, sent %d as %d bytes (%.2f)", res.Resumed, res.Sent, res.Compressed, float64(res.Compressed)/float64(res.Sent))

	// Random data does not shrink: SFTP as before.
	rb, rsum := remotetest.Data(10<<20, 4)
	if res, err := r.Put(context.Background(), "random.safetensors", remotetest.Src(rb, rsum), remote.PutOptions{}); err != nil || res.Compressed != 0 {
		t.Fatalf("random data: %+v %v", res, err)
	}
	// compress=off: never.
	off := open(t, s.url(folder), remote.Env{Options: map[string]string{"compress": "off"}})
	defer off.Close()
	b2, sum2 := bf16ish(9<<20, 5)
	if res, err := off.Put(context.Background(), "off.safetensors", remotetest.Src(b2, sum2), remote.PutOptions{}); err != nil || res.Compressed != 0 {
		t.Fatalf("compress=off: %+v %v", res, err)
	}
	if _, err := remote.Open(context.Background(), s.url(folder), remote.Env{Options: map[string]string{"compress": "maybe"}}); err == nil || !strings.Contains(err.Error(), "compress") {
		t.Fatalf("bad compress option: %v", err)
	}
}
