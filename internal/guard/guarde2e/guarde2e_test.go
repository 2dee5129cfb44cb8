// Package guarde2e tests the guard as `pod create`, `pod start` and deploy install it:
// copied over a real sshd onto a fake RunPod pod (its runtime gives each boot its own
// sshd with the environment RunPod gives a pod) or onto an SSH host with Docker, started
// detached from the SSH session, and left alone: the pod stops itself.
package guarde2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/guard"
	"github.com/daydreamlive/scopectl/internal/guard/guardtest"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod"
	"github.com/daydreamlive/scopectl/internal/provider/runpod/runpodtest"
	"github.com/daydreamlive/scopectl/internal/remote"
	_ "github.com/daydreamlive/scopectl/internal/remote/ssh"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

const userKey = "rpa_" + "GUARDE2EUSERKEYGUARDE2EUSERKEY0001"

// pods is a fake RunPod whose pods run Scope's stand-in and an sshd (new port each boot)
// whose sessions have what RunPod gives a pod: RUNPOD_POD_ID, the pod-scoped
// RUNPOD_API_KEY, the pod's env (its limits), nothing of the user's.
type pods struct {
	srv    *runpodtest.Server
	c      *runpod.Client
	root   string // pod id → root/<id> is its /workspace
	lap    *guardtest.Laptop
	mu     sync.Mutex
	khosts map[string]string // pod id → known_hosts of its current sshd
}

func newPods(t *testing.T) *pods {
	testkit.NeedFile(t, "/usr/sbin/sshd", "openssh-server")
	stub := testkit.GoBuild(t, testkit.Build{Pkg: "./internal/scope/scopestub", Static: true})
	smi := guardtest.FakeSMI(t)
	p := &pods{root: t.TempDir(), lap: guardtest.NewLaptop(t), khosts: map[string]string{}}
	rt := func(v runpodtest.PodView) (*runpodtest.Container, error) {
		ws := filepath.Join(p.root, v.ID)
		kh := p.lap.MachineHome(t, ws)
		port := guardtest.FreePort(t)
		sessions := v.Env["TEST_SESSIONS"]
		if sessions == "" {
			sessions = "0"
		}
		scope := exec.Command(stub, "--host", "127.0.0.1", "--port", fmt.Sprint(port), "--sessions", sessions)
		testkit.KillWithParent(scope)
		if err := scope.Start(); err != nil {
			return nil, err
		}
		env := []string{"PATH=" + smi + ":/usr/bin:/bin", "RUNPOD_API_URL=" + p.srv.RESTURL()}
		for _, kv := range v.ContainerEnv() {
			if k, _, _ := strings.Cut(kv, "="); (k == runpod.EnvAPIKey && v.Env["TEST_NO_KEY"] != "") || strings.ContainsAny(kv, " \"'") {
				continue
			}
			env = append(env, kv)
		}
		sshd := testkit.StartSSHD(t, ws, "SetEnv "+strings.Join(env, " ")+"\n")
		p.mu.Lock()
		p.khosts[v.ID] = kh
		p.mu.Unlock()
		return &runpodtest.Container{PublicIP: "127.0.0.1", TCP: map[int]int{22: sshd},
			HTTP: map[int]string{8000: fmt.Sprintf("http://127.0.0.1:%d", port)},
			Stop: func() {
				// The pod's processes end with it: Scope, and the guard started over SSH.
				scope.Process.Kill()
				scope.Wait()
				guardtest.KillGuard(filepath.Join(ws, ".scopectl", "guard"))
			}}, nil
	}
	p.srv = runpodtest.New(t, runpodtest.Options{APIKey: userKey, Runtime: rt})
	c, err := runpod.New(runpod.Options{APIKey: secret.New(userKey), APIURL: p.srv.RESTURL(), GraphQLURL: p.srv.GraphQLURL(),
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p.c = c
	t.Cleanup(func() {
		for _, v := range p.srv.Pods() {
			guardtest.KillGuard(filepath.Join(p.root, v.ID, ".scopectl", "guard"))
		}
	})
	return p
}

func (p *pods) create(t *testing.T, l provider.Limits, ports []string, extra map[string]string) *provider.Pod {
	t.Helper()
	env := l.Env()
	for k, v := range extra {
		env[k] = v
	}
	pod, err := p.c.Create(context.Background(), provider.CreateSpec{GPUType: "NVIDIA GeForce RTX 4090", Image: "scope:test",
		RequestID: provider.NewRequestID(), Env: env, Ports: ports})
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

func (p *pods) status(id string) string {
	for _, v := range p.srv.Pods() {
		if v.ID == id {
			return v.Status
		}
	}
	return "GONE"
}

func (p *pods) waitStatus(t *testing.T, id, want string, start time.Time, within time.Duration) time.Duration {
	t.Helper()
	for time.Since(start) < within {
		if p.status(id) == want {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(p.root, id, ".scopectl", "guard.log"))
	t.Fatalf("pod %s still %s after %s; guard log:\n%s", id, p.status(id), within, log)
	return 0
}

// install is what `pod create` and `pod start` do once the pod exists: wait for it,
// copy scopectl there, start the guard.
func (p *pods) install(t *testing.T, pod *provider.Pod, bin []byte) (*guard.Installed, error) {
	ws := filepath.Join(p.root, pod.ID)
	needSSH := false // as pod create decides: the pod exposes 22/tcp
	for _, v := range p.srv.Pods() {
		needSSH = needSSH || (v.ID == pod.ID && slices.Contains(v.Ports, "22/tcp"))
	}
	return guard.Install(context.Background(), guard.InstallInput{Pod: pod, Provider: p.c, Wait: 30 * time.Second, NeedSSH: needSSH,
		Binary: func() ([]byte, error) { return bin, nil }, Dir: filepath.Join(ws, ".scopectl"), Args: []string{"--no-procs", "--scope-url", p.scopeURL(t, pod.ID)},
		Open: func(ctx context.Context, u string) (remote.Remote, remote.Runner, error) {
			p.mu.Lock()
			kh := p.khosts[pod.ID]
			p.mu.Unlock()
			r, err := remote.Open(ctx, u, remote.Env{KnownHosts: kh})
			if err != nil {
				return nil, nil, err
			}
			run, ok := r.(remote.Runner)
			if !ok {
				r.Close()
				return nil, nil, errors.New("not a runner")
			}
			return r, run, nil
		}})
}

// scopeURL is where Scope's stand-in of pod id answers on this machine (RunPod's proxy
// forwards there): the guard on the pod asks it for sessions.
func (p *pods) scopeURL(t *testing.T, id string) string {
	return strings.NewReplacer("{pod}", id, "{port}", "8000").Replace(p.srv.ProxyURL())
}

// TestCreateStartsGuard: `pod create`'s guard install on a RunPod pod: the pod stops
// itself within its idle limit + 60 s with nothing of the laptop's running; a busy pod
// does not; `pod start` starts the guard again (a pid left in its lock by the pod's
// last boot is not taken for a live guard), and a second install while one runs keeps
// the one. No SSH, or no pod-scoped key: one line naming what is missing.
func TestCreateStartsGuard(t *testing.T) {
	p := newPods(t)
	bin, err := os.ReadFile(testkit.Scopectl(t))
	if err != nil {
		t.Fatal(err)
	}
	// The idle limit counts from the pod's start (RunPod's lastStartedAt), so it must
	// outlast the install: booting, SSH, copying scopectl.
	const limit = 15 * time.Second
	ports := []string{"8000/http", "22/tcp"}
	busy := p.create(t, provider.Limits{IdleStop: 3 * time.Second}, ports, map[string]string{"TEST_SESSIONS": "1"})
	if _, err := p.install(t, busy, bin); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	idle := p.create(t, provider.Limits{IdleStop: limit}, ports, nil)
	gi, err := p.install(t, idle, bin)
	if err != nil || gi.PID <= 0 || gi.Already {
		t.Fatalf("install: %+v %v", gi, err)
	}
	t.Logf("guard running %.1fs after create (pod boot, SSH, copy, start)", time.Since(t0).Seconds())
	took := p.waitStatus(t, idle.ID, provider.StatusExited, t0, limit+60*time.Second)
	t.Logf("RunPod pod, guard started by create: idle limit %s, stopped %.1fs after create (%.1fs past the limit)", limit, took.Seconds(), (took - limit).Seconds())
	if st := p.status(busy.ID); st != provider.StatusRunning {
		t.Fatalf("busy pod is %s", st)
	}
	stop, err := os.ReadFile(filepath.Join(p.root, idle.ID, ".scopectl", "guard", "stop.json"))
	if s, _ := guard.ReadStop(stop); err != nil || s == nil || s.Kind != guard.KindIdle || s.Target != idle.ID {
		t.Fatalf("stop.json: %s %v", stop, err)
	}

	// pod start: the guard died with the pod; a live process's pid is left in its lock.
	lock := filepath.Join(p.root, idle.ID, ".scopectl", "guard", "guard.lock")
	os.WriteFile(lock, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o600)
	if err := p.c.Start(context.Background(), idle.ID); err != nil {
		t.Fatal(err)
	}
	t2 := time.Now()
	again, err := p.install(t, idle, bin)
	if err != nil || again.Already || again.PID == gi.PID || again.PID == os.Getpid() {
		t.Fatalf("install after pod start: %+v %v", again, err)
	}
	// A second install while it runs: the same guard, kept.
	if same, err := p.install(t, idle, bin); err != nil || !same.Already || same.PID != again.PID {
		log, _ := os.ReadFile(filepath.Join(p.root, idle.ID, ".scopectl", "guard.log"))
		t.Fatalf("second install: %+v %v (first %d); guard log:\n%s", same, err, again.PID, log)
	}
	t.Logf("guard running again %.1fs after pod start", time.Since(t2).Seconds())
	took = p.waitStatus(t, idle.ID, provider.StatusExited, t2, limit+60*time.Second)
	t.Logf("RunPod pod after pod start: stopped again %.1fs after the start (%.1fs past the limit)", took.Seconds(), (took - limit).Seconds())

	// What cannot be installed says what is missing, in one line.
	noSSH := p.create(t, provider.Limits{IdleStop: limit}, []string{"8000/http"}, nil)
	noKey := p.create(t, provider.Limits{IdleStop: limit}, ports, map[string]string{"TEST_NO_KEY": "1"})
	for _, c := range []struct {
		pod  *provider.Pod
		want string
	}{{noSSH, "no public SSH port"}, {noKey, "no pod-scoped RUNPOD_API_KEY"}} {
		_, err := p.install(t, c.pod, bin)
		var ni *guard.NotInstalledError
		if !errors.As(err, &ni) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "pod watch") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v", c.want, err)
		}
		if strings.Contains(fmt.Sprint(err), userKey) {
			t.Error("the user's key in an error")
		}
	}
	if n, refused := p.srv.PodKeyRequests(); n == 0 || refused != 0 {
		t.Errorf("pod-key requests %d, refused %d", n, refused)
	}
}
