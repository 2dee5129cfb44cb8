package cli_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/deploy/deploytest"
	"github.com/daydreamlive/scopectl/internal/testkit"
)

// tcpRelay forwards 127.0.0.1:<its port> to target until stop is called; then the
// address refuses connections, as a host that went away.
func tcpRelay(t *testing.T, target string) (port int, stop func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	stop = func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}
	t.Cleanup(stop)
	return l.Addr().(*net.TCPAddr).Port, stop
}

type hostPodJSON struct {
	ID       string         `json:"id"`
	Name     string         `json:"name"`
	Status   string         `json:"status"`
	GPUType  string         `json:"gpu_type"`
	GPUCount int            `json:"gpu_count"`
	PublicIP string         `json:"public_ip"`
	Ports    map[string]int `json:"ports"`
	SSHUser  string         `json:"ssh_user"`
	Image    string         `json:"image"`
	Detail   string         `json:"detail"`
	Note     string         `json:"note"`
	Recorded bool           `json:"recorded"`
	Limits   *struct {
		IdleStop int64   `json:"idle_stop"`
		MaxHours float64 `json:"max_hours"`
		FromPod  bool    `json:"from_pod"`
	} `json:"limits"`
}

// TestPodSSHHost: a machine reached over a real sshd (whose sessions find a fake
// nvidia-smi printing real recorded H100 output) is added as a pod of provider ssh,
// listed, found by name, shelled into; deploy --pod runs Scope there in Docker (image
// from a local registry), status reads it, pod stop/start stop and start the container;
// a host that goes away is listed as EXITED, unreachable; pod rm forgets it.
func TestPodSSHHost(t *testing.T) {
	if testing.Short() {
		t.Skip("runs sshd, builds an image")
	}
	deploytest.RequireDocker(t) // the host's Docker, reached over SSH as the user running the tests
	e := newEnv(t)
	sshdPort := startSSHDWith(t, e.root, "SetEnv PATH="+sessionPath(fakeNvidiaSMI(t))+"\n")
	t.Setenv("SSH_AUTH_SOCK", "")
	host := fmt.Sprintf("ssh://"+testkit.User()+"@127.0.0.1:%d", sshdPort)

	// Unknown host key: refused, one line; bad URLs: usage.
	if _, errs, code := e.run("pod", "create", "--provider", "ssh", "--host", host, "--known-hosts", filepath.Join(e.root, "empty_known_hosts")); code == 0 ||
		!strings.Contains(errs, "host key") || strings.Count(strings.TrimSpace(errs), "\n") > 0 {
		t.Fatalf("unknown host key: exit %d %q", code, errs)
	}
	for _, bad := range [][]string{{"--host", "ssh://127.0.0.1:22/some/dir"}, {"--host", "http://x"}, {}, {"--host", host, "--gpu", "NVIDIA A40"}} {
		if _, errs, code := e.run(append([]string{"pod", "create", "--provider", "ssh"}, bad...)...); code != 2 {
			t.Errorf("pod create --provider ssh %v: exit %d %q", bad, code, errs)
		}
	}

	p := decode[hostPodJSON](t, e.mustRun("pod", "create", "--provider", "ssh", "--host", host, "--name", "box", "--no-guard", "--json"))
	if !strings.HasPrefix(p.ID, "ssh-") || p.Name != "box" || p.Status != "RUNNING" || p.GPUType != "NVIDIA H100 80GB HBM3" || p.GPUCount != 1 ||
		p.PublicIP != "127.0.0.1" || p.Ports["22/tcp"] != sshdPort || p.SSHUser != "root" {
		t.Fatalf("pod create --provider ssh: %+v", p)
	}
	id := p.ID
	// Adding it again is the same host.
	if again := decode[hostPodJSON](t, e.mustRun("pod", "create", "--provider", "ssh", "--host", host+"/", "--no-guard", "--json")); again.ID != id || again.Name != "box" {
		t.Fatalf("added twice: %+v", again)
	}
	// No RunPod key: pod ls lists the SSH hosts alone.
	ls := decode[[]hostPodJSON](t, e.mustRun("pod", "ls", "--json"))
	if len(ls) != 1 || ls[0].ID != id || ls[0].Status != "RUNNING" || !ls[0].Recorded {
		t.Fatalf("pod ls: %+v", ls)
	}
	if got := decode[hostPodJSON](t, e.mustRun("pod", "get", "box", "--json")); got.ID != id || got.GPUType != "NVIDIA H100 80GB HBM3" {
		t.Fatalf("pod get by name: %+v", got)
	}
	gpus := decode[[]struct {
		ID   string `json:"id"`
		GPUs []struct {
			Name           string `json:"name"`
			MemoryTotalMiB int64  `json:"memory_total_mib"`
			UtilizationPct int    `json:"utilization_pct"`
		} `json:"gpus"`
		Error string `json:"error"`
	}](t, e.mustRun("pod", "gpus", "--provider", "ssh", "--json"))
	if len(gpus) != 1 || gpus[0].ID != id || len(gpus[0].GPUs) != 1 || gpus[0].GPUs[0].Name != "NVIDIA H100 80GB HBM3" ||
		gpus[0].GPUs[0].MemoryTotalMiB != 81559 || gpus[0].GPUs[0].UtilizationPct != 100 || gpus[0].Error != "" {
		t.Fatalf("pod gpus --provider ssh: %+v", gpus)
	}
	if text := e.mustRun("pod", "gpus", "--provider", "ssh"); !strings.Contains(text, "0: NVIDIA H100 80GB HBM3") || !strings.Contains(text, "81559 MiB") {
		t.Fatalf("pod gpus text: %s", text)
	}
	// pod ssh: a command runs there, its exit status comes back.
	if out := e.mustRun("pod", "ssh", "box", "--", "echo", "hi", "from", "$(uname", "-s)"); strings.TrimSpace(out) != "hi from Linux" {
		t.Fatalf("pod ssh: %q", out)
	}
	interactiveShell(t, id) // OpenSSH, direct
	if out, _, code := e.run("pod", "ssh", id, "--", "echo", "partial;", "exit", "3"); code != 3 || strings.TrimSpace(out) != "partial" {
		t.Fatalf("pod ssh exit 3: %d %q", code, out)
	}
	if _, _, code := e.run("pod", "ssh", id, "--gateway", "--", "true"); code != 2 {
		t.Fatalf("--gateway on an SSH host: exit %d", code)
	}
	// Nothing deployed yet: no container to start.
	if _, errs, code := e.run("pod", "start", id); code == 0 || !strings.Contains(errs, "deploy --pod "+id) {
		t.Fatalf("start without a container: exit %d %q", code, errs)
	}

	// A second address of the same machine that goes away: EXITED, unreachable.
	relay, stop := tcpRelay(t, fmt.Sprintf("127.0.0.1:%d", sshdPort))
	gone := decode[hostPodJSON](t, e.mustRun("pod", "create", "--provider", "ssh", "--host", fmt.Sprintf("ssh://"+testkit.User()+"@127.0.0.1:%d", relay),
		"--name", "flaky", "--accept-new-host-key", "--no-guard", "--json"))
	stop()
	ls = decode[[]hostPodJSON](t, e.mustRun("pod", "ls", "--json"))
	states := map[string]hostPodJSON{}
	for _, v := range ls {
		states[v.Name] = v
	}
	if len(ls) != 2 || states["box"].Status != "RUNNING" || states["flaky"].Status != "EXITED" || !strings.Contains(states["flaky"].Note, "unreachable") {
		t.Fatalf("pod ls with a host gone: %+v", ls)
	}
	if out := e.mustRun("pod", "rm", gone.ID); !strings.Contains(out, "forgotten") {
		t.Fatalf("pod rm: %q", out)
	}
	if _, _, code := e.run("pod", "get", gone.ID); code != 4 {
		t.Fatalf("get a forgotten host: exit %d", code)
	}

	// deploy --pod runs Scope there (Docker over SSH); status, stop, start.
	reg := deploytest.StartRegistry(t)
	img := reg.Push(deploytest.Image{})
	name := "scopectl-host-test-" + deploytest.RandHex(5)
	deploytest.RemoveContainerAtEnd(t, name)
	scopePort := deploytest.FreePort(t)
	out := e.mustRun("deploy", "--pod", id, "--image", img, "--name", name, "--gpus=false", "--volume", filepath.Join(e.root, "workspace"),
		"--port", fmt.Sprint(scopePort), "--wait", "60s", "--idle-stop", "45m", "--max-hours", "3", "--no-guard", "--json")
	if !strings.Contains(out, `"action": "create"`) || !strings.Contains(out, fmt.Sprintf("http://127.0.0.1:%d", scopePort)) {
		t.Fatalf("deploy --pod %s: %s", id, out)
	}
	v := decode[statusJSON](t, e.mustRun("status", "box", "--json"))
	if c := v.Container; c == nil || c.Name != name || !c.Running || c.Image != img || !v.Healthy || v.Scope != fmt.Sprintf("http://127.0.0.1:%d", scopePort) {
		t.Fatalf("status of the host: %+v %+v", v, v.Container)
	}
	checkRecordedGPU(t, v)
	p = decode[hostPodJSON](t, e.mustRun("pod", "get", id, "--json"))
	if p.Status != "RUNNING" || p.Image != img || p.Ports["8000/http"] != scopePort || !strings.Contains(p.Detail, name+" running") {
		t.Fatalf("pod get after deploy: %+v", p)
	}
	// The limits are on the container (labels), read back by any scopectl.
	if l := p.Limits; l == nil || !l.FromPod || l.IdleStop != int64(45*time.Minute) || l.MaxHours != 3 {
		t.Fatalf("limits of the host after deploy: %+v", l)
	}
	if ls := decode[[]hostPodJSON](t, e.mustRun("pod", "ls", "--provider", "ssh", "--json")); len(ls) != 1 || ls[0].Limits == nil || ls[0].Limits.IdleStop != int64(45*time.Minute) {
		t.Fatalf("pod ls limits: %+v", ls)
	}
	e.mustRun("pod", "stop", id)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if st, _ := deploytest.Docker(ctx, "inspect", "--format", "{{.State.Running}}", name); strings.TrimSpace(st) != "false" {
		t.Fatalf("container after pod stop: running=%s", st)
	}
	if p := decode[hostPodJSON](t, e.mustRun("pod", "get", id, "--json")); p.Status != "EXITED" || !strings.Contains(p.Detail, "exited") {
		t.Fatalf("pod get after stop: %+v", p)
	}
	e.mustRun("pod", "start", id, "--no-guard")
	if p := decode[hostPodJSON](t, e.mustRun("pod", "get", id, "--json")); p.Status != "RUNNING" {
		t.Fatalf("pod get after start: %+v", p)
	}
	// Again: nothing changes.
	if out := e.mustRun("deploy", "--pod", id, "--image", img, "--gpus=false", "--volume", filepath.Join(e.root, "workspace"),
		"--port", fmt.Sprint(scopePort), "--wait", "60s", "--idle-stop", "45m", "--max-hours", "3", "--no-guard", "--json"); !strings.Contains(out, `"action": "keep"`) {
		t.Fatalf("second deploy --pod: %s", out)
	}

	// The guard on the host: scopectl copied there, started next to the container; the
	// laptop's scopectl is gone; an idle Scope is docker-stopped within its limit + 60 s.
	g := decode[map[string]any](t, e.mustRun("pod", "guard", "box", "--idle-stop", "2s", "--no-gpu", "--binary", buildBinary(t), "--json"))
	pid, _ := g["pid"].(float64)
	if pid <= 0 {
		t.Fatalf("pod guard: %v", g)
	}
	t.Cleanup(func() {
		if pr, err := os.FindProcess(int(pid)); err == nil {
			pr.Kill()
		}
	})
	t0 := time.Now()
	for {
		st, _ := deploytest.Docker(ctx, "inspect", "--format", "{{.State.Running}}", name)
		if strings.TrimSpace(st) == "false" {
			break
		}
		if time.Since(t0) > 62*time.Second {
			t.Fatalf("the guard did not stop the idle container within 2s + 60s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("SSH host guard: idle limit 2s, container stopped %.1fs after the guard started", time.Since(t0).Seconds())
	if p := decode[hostPodJSON](t, e.mustRun("pod", "get", id, "--json")); p.Status != "EXITED" {
		t.Fatalf("pod get after the guard's stop: %+v", p)
	}
	if out := e.mustRun("pod", "ssh", "box", "--", "cat", "~/.scopectl/guard-"+name+"/stop.json"); !strings.Contains(out, `"kind": "idle"`) {
		t.Fatalf("stop.json on the host: %s", out)
	}
	// kill is asynchronous: wait (bounded) for the guard to be gone before removing
	// the folder it writes in, or rm races its last write.
	e.mustRun("pod", "ssh", "box", "--", "kill", fmt.Sprint(int(pid)), ";",
		"for", "i", "in", "$(seq", "100);", "do", "kill", "-0", fmt.Sprint(int(pid)), "2>/dev/null", "||", "break;", "sleep", "0.05;", "done;",
		"rm", "-rf", "~/.scopectl/guard-"+name, "~/.scopectl/guard.log")

	// Forgotten: the container stays; with no host and no RunPod key, pod ls says what is missing.
	e.mustRun("pod", "rm", id, "--json")
	if !deploytest.ContainerExists(t, name) {
		t.Fatal("pod rm of an SSH host removed its container")
	}
	if _, errs, code := e.run("pod", "ls"); code != 0 || !strings.Contains(errs, "RUNPOD_API_KEY is not set") {
		t.Fatalf("pod ls with nothing: exit %d %q", code, errs)
	}
	if data, _ := os.ReadFile(filepath.Join(e.root, ".ssh", "known_hosts")); !strings.Contains(string(data), fmt.Sprintf("[127.0.0.1]:%d", relay)) {
		t.Fatal("--accept-new-host-key did not record the new key")
	}
}
