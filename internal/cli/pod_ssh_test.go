package cli_test

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	xssh "golang.org/x/crypto/ssh"

	"github.com/daydreamlive/scopectl/internal/provider/runpod/runpodtest"
	"github.com/daydreamlive/scopectl/internal/testkit"
)

// ptyGateway starts a real sshd that behaves like RunPod's ssh.runpod.io: every session
// runs a forced command that refuses to work without a terminal (so exec, SCP and SFTP
// fail), prints a banner and gives an interactive shell, whose PATH finds a fake
// nvidia-smi. It returns the port.
func ptyGateway(t *testing.T, e *env) int {
	t.Helper()
	script := filepath.Join(t.TempDir(), "gateway.sh")
	body := "#!/bin/sh\n" +
		"if [ ! -t 0 ]; then echo 'Error: Your SSH client doesn'\"'\"'t support PTY' >&2; exit 1; fi\n" +
		"echo 'Welcome to the test gateway. Enjoy!'\n" +
		"if command -v bash >/dev/null; then exec bash --norc -i; else exec sh -i; fi\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return startSSHDWith(t, e.root, "ForceCommand "+script+"\nSetEnv PATH="+sessionPath(fakeNvidiaSMI(t))+"\n")
}

// runningPod creates a pod on the fake RunPod API without 22/tcp (so only the gateway
// reaches it) and waits until it runs.
func runningPod(t *testing.T, e *env) (*runpodtest.Server, string) {
	t.Helper()
	key := "rpa_" + strings.Repeat("G5", 20)
	srv := fakeRunPod(t, key)
	out, errs, code := e.run("pod", "create", "--gpu", "NVIDIA GeForce RTX 4090", "--ports", "8000/http",
		"--ssh-key", filepath.Join(e.root, "no-key.pub"), "--json")
	if code != 0 {
		t.Fatalf("pod create: exit %d %s", code, errs)
	}
	pod := decode[map[string]any](t, out)
	id := pod["id"].(string)
	// No SSH to start the guard with: said in one line, with the fallback; the pod stays.
	var guardLine string
	for _, l := range strings.Split(errs, "\n") {
		if strings.Contains(l, "guard not installed") {
			guardLine = l
		}
	}
	if !strings.Contains(guardLine, "guard not installed on "+id+": no public SSH port") || !strings.Contains(guardLine, "pod watch") ||
		pod["guard_error"] == nil || pod["guard"] != nil {
		t.Fatalf("pod create without SSH: %q %v", errs, pod)
	}
	for i := 0; ; i++ {
		got := decode[map[string]any](t, e.mustRun("pod", "get", id, "--json"))
		if got["status"] == "RUNNING" {
			if ports, _ := got["ports"].(map[string]any); ports["22/tcp"] != nil {
				t.Fatalf("pod has 22/tcp mapped: %v", got)
			}
			return srv, id
		}
		if i > 100 {
			t.Fatalf("pod never ran: %v", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPodSSHGateway: a pod with no public IP is reached through a PTY-only gateway (a real
// sshd with a forced terminal-only command): `pod ssh ID -- CMD` types CMD into the
// terminal and returns its output and exit status; `status ID` reads the pod's state and
// cost from the API, Scope, and the GPU through the same gateway.
func TestPodSSHGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	testkit.NeedRoot(t, "a terminal from the test sshd (sshd chowns the pty to the login)")
	e := newEnv(t)
	srv, id := runningPod(t, e)
	port := ptyGateway(t, e)
	t.Setenv("SSH_AUTH_SOCK", "")
	gw := fmt.Sprintf("127.0.0.1:%d", port)

	// Without a user in the override, the login is the pod's podHostId from RunPod's
	// GraphQL API: a gateway that, like ssh.runpod.io, takes {podId}-{suffix} logins only
	// and forwards the session to the pod.
	rgw, logins := runpodGateway(t, e, srv, port)
	t.Setenv("SCOPECTL_RUNPOD_SSH_GATEWAY", rgw)
	if out := e.mustRun("pod", "ssh", id, "--", "echo", "via", "podHostId"); strings.TrimSpace(out) != "via podHostId" {
		t.Fatalf("pod ssh through the gateway: %q", out)
	}
	if got := logins(); len(got) == 0 || got[len(got)-1] != srv.PodHostID(id) || !strings.HasPrefix(got[0], id+"-") {
		t.Fatalf("gateway logins %v, want %s", got, srv.PodHostID(id))
	}
	// A login the gateway does not know (another pod's) is refused: one line.
	t.Setenv("SCOPECTL_RUNPOD_SSH_GATEWAY", id+"-00000000@"+rgw)
	if _, errs, code := e.run("pod", "ssh", id, "--", "echo", "hi"); code == 0 || strings.Count(strings.TrimSpace(errs), "\n") > 0 {
		t.Fatalf("wrong login: exit %d %q", code, errs)
	}

	// The gateway itself refuses exec (it is PTY-only): ssh:// cannot use it.
	if _, errs, code := e.run("gpu", "--host", "ssh://"+testkit.User()+"@"+gw+"/"); code == 0 || !strings.Contains(errs, "ssh+pty://") {
		t.Fatalf("exec on the PTY-only gateway: exit %d %q", code, errs)
	}

	t.Setenv("SCOPECTL_RUNPOD_SSH_GATEWAY", testkit.User()+"@"+gw)
	out := e.mustRun("pod", "ssh", id, "--", "echo", "hi", "from", "$(uname", "-s)")
	if strings.TrimSpace(out) != "hi from Linux" {
		t.Fatalf("pod ssh -- echo: %q", out)
	}
	if out, _, code := e.run("pod", "ssh", id, "--", "echo", "partial;", "exit", "3"); code != 3 || strings.TrimSpace(out) != "partial" {
		t.Fatalf("pod ssh -- exit 3: exit %d %q", code, out)
	}
	if _, errs, code := e.run("pod", "ssh", id, "echo"); code != 2 {
		t.Fatalf("a command without --: exit %d %q", code, errs)
	}

	// The interactive shell: OpenSSH's ssh -tt to the gateway, in a real terminal.
	interactiveShell(t, id)

	// status of the pod: the API's state and cost, Scope (here the stand-in, --scope), the
	// GPU through the gateway.
	// Cost so far counts from the last start, not from creation.
	url := startScopeStub(t, e)
	srv.SetTimes(id, time.Now().Add(-10*time.Hour), time.Now().Add(-time.Hour))
	v := decode[statusJSON](t, e.mustRun("status", id, "--scope", url, "--json"))
	if v.Target != "pod "+id || v.Pod == nil || v.Pod.ID != id || v.Pod.Status != "RUNNING" || v.Pod.CostPerHr != 0.69 ||
		v.Pod.UptimeS < 3600 || v.Pod.UptimeS > 3660 || v.Pod.CostSoFar < 0.69 || v.Pod.CostSoFar > 0.69*1.02 || v.Pod.SSH != "gateway" {
		t.Fatalf("status pod: %+v", v.Pod)
	}
	if !v.Healthy || v.Scope != url || len(v.Errors) != 0 {
		t.Fatalf("status: %+v", v)
	}
	checkRecordedGPU(t, v)
	text := e.mustRun("status", id, "--scope", url)
	for _, want := range []string{"pod:", id, "RUNNING", "$0.690/h", "so far", "ssh:", "gateway", "gpu 0:"} {
		if !strings.Contains(text, want) {
			t.Errorf("status text lacks %q:\n%s", want, text)
		}
	}

	// Stopped: the state, no GPU (listed), no cost accruing; Scope down is exit 1.
	e.mustRun("pod", "stop", id)
	out, _, code := e.run("status", id, "--scope", "http://127.0.0.1:1", "--json")
	v = decode[statusJSON](t, out)
	if code != 1 || v.Pod == nil || v.Pod.Status != "EXITED" || v.Pod.CostSoFar != 0 || !strings.Contains(strings.Join(v.Errors, "\n"), "gpu: pod "+id+" is EXITED") {
		t.Fatalf("status of a stopped pod: exit %d %s", code, out)
	}
	if _, errs, code := e.run("status", "no-such-pod", "--json"); code != 4 {
		t.Fatalf("status of a missing pod: exit %d %s", code, errs)
	}
}

// runpodGateway is a stand-in for ssh.runpod.io in front of the PTY-only sshd at
// upstream: it accepts the user's key for the login {podId}-{suffix} of a pod the fake
// API has (and no other login), and forwards each session to the sshd as root. It
// returns its host:port (its host key in known_hosts) and the logins it was offered.
func runpodGateway(t *testing.T, e *env, srv *runpodtest.Server, upstream int) (string, func() []string) {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(e.root, ".ssh", "id_ed25519"))
	if err != nil {
		t.Fatal(err)
	}
	user, err := xssh.ParsePrivateKey(pem)
	if err != nil {
		t.Fatal(err)
	}
	_, hostKey, _ := ed25519.GenerateKey(nil)
	host, _ := xssh.NewSignerFromKey(hostKey)
	var mu sync.Mutex
	var logins []string
	cfg := &xssh.ServerConfig{PublicKeyCallback: func(c xssh.ConnMetadata, k xssh.PublicKey) (*xssh.Permissions, error) {
		mu.Lock()
		logins = append(logins, c.User())
		mu.Unlock()
		podID, _, _ := strings.Cut(c.User(), "-")
		if !bytes.Equal(k.Marshal(), user.PublicKey().Marshal()) || srv.PodHostID(podID) != c.User() {
			return nil, fmt.Errorf("no pod for %s", c.User())
		}
		return nil, nil
	}}
	cfg.AddHostKey(host)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	addr := l.Addr().String()
	kh, _ := os.OpenFile(filepath.Join(e.root, ".ssh", "known_hosts"), os.O_APPEND|os.O_WRONLY, 0o600)
	fmt.Fprintf(kh, "\n[127.0.0.1]:%d %s", l.Addr().(*net.TCPAddr).Port, xssh.MarshalAuthorizedKey(host.PublicKey()))
	kh.Close()
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			go proxySSH(nc, cfg, fmt.Sprintf("127.0.0.1:%d", upstream), user)
		}
	}()
	return addr, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), logins...) }
}

// proxySSH serves one client connection: every session channel is forwarded to upstream
// (logged in as root with key), requests and data both ways.
func proxySSH(nc net.Conn, cfg *xssh.ServerConfig, upstream string, key xssh.Signer) {
	defer nc.Close()
	sc, chans, reqs, err := xssh.NewServerConn(nc, cfg)
	if err != nil {
		return
	}
	defer sc.Close()
	go xssh.DiscardRequests(reqs)
	up, err := xssh.Dial("tcp", upstream, &xssh.ClientConfig{User: "root", Auth: []xssh.AuthMethod{xssh.PublicKeys(key)},
		HostKeyCallback: xssh.InsecureIgnoreHostKey()})
	if err != nil {
		return
	}
	defer up.Close()
	forward := func(in <-chan *xssh.Request, out xssh.Channel) {
		for r := range in {
			ok, _ := out.SendRequest(r.Type, r.WantReply, r.Payload)
			if r.WantReply {
				r.Reply(ok, nil)
			}
		}
	}
	for nch := range chans {
		if nch.ChannelType() != "session" {
			nch.Reject(xssh.Prohibited, "sessions only")
			continue
		}
		uch, ureqs, err := up.OpenChannel("session", nil)
		if err != nil {
			nch.Reject(xssh.ConnectionFailed, err.Error())
			continue
		}
		cch, creqs, err := nch.Accept()
		if err != nil {
			uch.Close()
			continue
		}
		go func() { forward(creqs, uch); uch.Close() }()
		go func() { io.Copy(uch, cch); uch.CloseWrite() }()
		go io.Copy(cch.Stderr(), uch.Stderr())
		go func() {
			done := make(chan struct{})
			go func() { io.Copy(cch, uch); close(done) }()
			forward(ureqs, cch)
			<-done
			cch.Close()
		}()
	}
}

// interactiveShell runs `scopectl pod ssh ID` with no command in a real terminal (script(1)
// gives the binary a PTY) and types into it: what is typed must run on the far side.
func interactiveShell(t *testing.T, id string) {
	t.Helper()
	script, err := exec.LookPath("script")
	if err != nil {
		t.Log("no script(1): the interactive shell is not exercised")
		return
	}
	cmd := exec.Command(script, "-qec", buildBinary(t)+" pod ssh "+id, "/dev/null")
	cmd.Stdin = strings.NewReader("echo MARK$((40+2))\nexit\n")
	timer := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "MARK42") {
		t.Fatalf("interactive pod ssh %s: %v\n%s", id, err, out)
	}
}
