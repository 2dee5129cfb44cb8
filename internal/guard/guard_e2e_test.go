package guard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/guard"
	"github.com/daydreamlive/scopectl/internal/guard/guardtest"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod"
	"github.com/daydreamlive/scopectl/internal/provider/runpod/runpodtest"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/testkit"
	"github.com/daydreamlive/scopectl/internal/watch"
)

func TestMain(m *testing.M) { testkit.Main(m) }

const userKey = "rpa_" + "GUARDUSERKEYGUARDUSERKEY0000000001"

// pods is a fake RunPod whose pods' containers are Scope's stand-in plus `scopectl
// guard`, started with the environment RunPod gives a pod (RUNPOD_POD_ID, a pod-scoped
// RUNPOD_API_KEY) and nothing of the user's: the user's key never reaches them.
type pods struct {
	srv  *runpodtest.Server
	root string // each pod's /workspace is root/<pod id>
	c    *runpod.Client
	mu   sync.Mutex
	logs map[string]*strings.Builder
}

func newPods(t *testing.T) *pods {
	bin := testkit.Scopectl(t)
	stub := testkit.GoBuild(t, testkit.Build{Pkg: "./internal/scope/scopestub", Static: true})
	smi := guardtest.FakeSMI(t)
	p := &pods{root: t.TempDir(), logs: map[string]*strings.Builder{}}
	rt := func(v runpodtest.PodView) (*runpodtest.Container, error) {
		ws := filepath.Join(p.root, v.ID)
		os.MkdirAll(filepath.Join(ws, "jobs"), 0o755)
		port := guardtest.FreePort(t)
		scope := exec.Command(stub, "--host", "127.0.0.1", "--port", fmt.Sprint(port), "--sessions", v.Env["TEST_SESSIONS"])
		if v.Env["TEST_SESSIONS"] == "" {
			scope.Args[len(scope.Args)-1] = "0"
		}
		testkit.KillWithParent(scope)
		if err := scope.Start(); err != nil {
			return nil, err
		}
		g := exec.Command(bin, "guard", "--dir", filepath.Join(ws, "guard"), "--jobs", filepath.Join(ws, "jobs", "*", "state.json"),
			"--scope-url", fmt.Sprintf("http://127.0.0.1:%d", port), "--every", "300ms", "--no-procs")
		// What RunPod gives the container: the pod's env and its own variables. The
		// endpoint override stands in for rest.runpod.io.
		g.Env = append(v.ContainerEnv(), "PATH="+smi+":/usr/bin:/bin", "HOME="+ws, "RUNPOD_API_URL="+p.srv.RESTURL(),
			"FAKE_GPU_UTIL="+v.Env["TEST_GPU_UTIL"])
		log := &strings.Builder{}
		p.mu.Lock()
		p.logs[v.ID] = log
		p.mu.Unlock()
		g.Stdout, g.Stderr = &lockedWriter{mu: &p.mu, b: log}, &lockedWriter{mu: &p.mu, b: log}
		testkit.KillWithParent(g)
		if v.Env["TEST_NO_GUARD"] == "" {
			if err := g.Start(); err != nil {
				scope.Process.Kill()
				return nil, err
			}
		}
		return &runpodtest.Container{HTTP: map[int]string{8000: fmt.Sprintf("http://127.0.0.1:%d", port)}, Stop: func() {
			scope.Process.Kill()
			scope.Wait()
			if g.Process != nil {
				g.Process.Kill()
				g.Wait()
			}
		}}, nil
	}
	p.srv = runpodtest.New(t, runpodtest.Options{APIKey: userKey, Runtime: rt})
	c, err := runpod.New(runpod.Options{APIKey: secret.New(userKey), APIURL: p.srv.RESTURL(), GraphQLURL: p.srv.GraphQLURL(),
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p.c = c
	return p
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(b)
}

func (p *pods) log(id string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.logs[id]; l != nil {
		return l.String()
	}
	return ""
}

// create makes a pod the way scopectl does (limits in its env) and returns it; the
// "laptop" then goes away: nothing but the guard watches the pod.
func (p *pods) create(t *testing.T, l provider.Limits, extra map[string]string) *provider.Pod {
	t.Helper()
	env := l.Env()
	for k, v := range extra {
		env[k] = v
	}
	pod, err := p.c.Create(context.Background(), provider.CreateSpec{GPUType: "NVIDIA GeForce RTX 4090", Image: "scope:test",
		RequestID: provider.NewRequestID(), Env: env, Ports: []string{"8000/http"}})
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

// waitExited waits until the pod is stopped and returns how long after start.
func (p *pods) waitExited(t *testing.T, id string, start time.Time, within time.Duration) time.Duration {
	t.Helper()
	for time.Since(start) < within {
		if p.status(id) == provider.StatusExited {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("pod %s still %s after %s; guard log:\n%s", id, p.status(id), within, p.log(id))
	return 0
}

func (p *pods) stopFile(t *testing.T, id string) guard.Stop {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(p.root, id, "guard", "stop.json"))
	if err != nil {
		t.Fatalf("stop.json: %v; guard log:\n%s", err, p.log(id))
	}
	s, err := guard.ReadStop(b)
	if err != nil || s == nil {
		t.Fatalf("stop.json: %v", err)
	}
	return *s
}

func writeJob(t *testing.T, ws, name, phase string) {
	dir := filepath.Join(ws, "jobs", name)
	os.MkdirAll(dir, 0o755)
	b, _ := json.Marshal(map[string]string{"phase": phase})
	if err := os.WriteFile(filepath.Join(dir, "state.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestGuardOnRunPod: pods stop themselves, with nobody's laptop watching, within their
// limit + 60 s; busy pods survive; a guard that loses the API retries; only its own pod
// is ever stopped; two guards never run for one pod.
func TestGuardOnRunPod(t *testing.T) {
	p := newPods(t)
	const limit = 3 * time.Second
	t0 := time.Now()
	idle := p.create(t, provider.Limits{IdleStop: limit}, nil)
	session := p.create(t, provider.Limits{IdleStop: limit}, map[string]string{"TEST_SESSIONS": "1"})
	gpuBusy := p.create(t, provider.Limits{IdleStop: limit}, map[string]string{"TEST_GPU_UTIL": "87"})
	training := p.create(t, provider.Limits{IdleStop: limit, StopOnJobEnd: true}, nil)
	writeJob(t, filepath.Join(p.root, training.ID), "job1", "training")
	capped := p.create(t, provider.Limits{IdleStop: time.Hour, MaxHours: 6.0 / 3600}, map[string]string{"TEST_SESSIONS": "1"})
	noGuard := p.create(t, provider.Limits{IdleStop: limit}, map[string]string{"TEST_NO_GUARD": "1"})

	took := p.waitExited(t, idle.ID, t0, limit+60*time.Second)
	t.Logf("idle pod: limit %s, stopped %.1fs after create", limit, took.Seconds())
	if s := p.stopFile(t, idle.ID); s.Kind != guard.KindIdle || !strings.Contains(s.Reason, "idle") || s.Target != idle.ID {
		t.Errorf("stop.json = %+v", s)
	}
	tookCap := p.waitExited(t, capped.ID, t0, 6*time.Second+60*time.Second)
	t.Logf("max-hours pod: limit 6s, stopped %.1fs after create", tookCap.Seconds())
	if s := p.stopFile(t, capped.ID); s.Kind != guard.KindMaxHours {
		t.Errorf("capped stop.json = %+v", s)
	}
	// Busy pods are still running well past the idle limit.
	time.Sleep(2 * time.Second)
	for _, pod := range []*provider.Pod{session, gpuBusy, training, noGuard} {
		if st := p.status(pod.ID); st != provider.StatusRunning {
			t.Errorf("pod %s is %s; guard log:\n%s", pod.ID, st, p.log(pod.ID))
		}
	}
	// The training job ends: its pod stops at once.
	end := time.Now()
	writeJob(t, filepath.Join(p.root, training.ID), "job1", "done")
	tookJob := p.waitExited(t, training.ID, end, 60*time.Second)
	t.Logf("training pod: stopped %.1fs after its job ended", tookJob.Seconds())
	if s := p.stopFile(t, training.ID); s.Kind != guard.KindJobEnd {
		t.Errorf("training stop.json = %+v", s)
	}
	// Pod-scoped keys never touched another pod.
	if n, refused := p.srv.PodKeyRequests(); n == 0 || refused != 0 {
		t.Errorf("pod-key requests %d, refused %d", n, refused)
	}
	// The pod with no guard: nothing on it stopped it; the laptop's `pod watch` does.
	if st := p.status(noGuard.ID); st != provider.StatusRunning {
		t.Errorf("unguarded pod is %s", st)
	}
	db, err := store.OpenSQLite(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	db.PutPod(ctx, store.Pod{RequestID: noGuard.Tag, Provider: runpod.Name, ID: noGuard.ID, IdleStop: limit, CreatedAt: t0, LastSeenStatus: provider.StatusRunning})
	w := &watch.Watcher{Provider: p.c, ProviderName: runpod.Name, Store: db,
		Probes: []watch.Probe{watch.ScopeProbe{URL: func(pod provider.Pod) string {
			return strings.NewReplacer("{pod}", pod.ID, "{port}", "8000").Replace(p.srv.ProxyURL())
		}}}}
	ds, err := w.Tick(ctx)
	if err != nil || len(ds) != 1 || ds[0].Action != watch.ActionStop {
		t.Fatalf("pod watch: %+v %v", ds, err)
	}
	if st := p.status(noGuard.ID); st != provider.StatusExited {
		t.Errorf("unguarded pod after pod watch: %s", st)
	}
}

// TestGuardAPIOutage: the API answers 5xx to the stop: the guard says so, tries again,
// and stops its pod once the API is back; the other pods are untouched.
func TestGuardAPIOutage(t *testing.T) {
	p := newPods(t)
	other := p.create(t, provider.Limits{IdleStop: time.Hour}, nil)
	p.srv.Inject(runpodtest.Fault{Route: "POST /pods/{id}/stop", Kind: runpodtest.ServerError, Status: 502, Times: 8})
	t0 := time.Now()
	pod := p.create(t, provider.Limits{IdleStop: 2 * time.Second}, nil)
	took := p.waitExited(t, pod.ID, t0, 62*time.Second)
	t.Logf("stopped %.1fs after create, through 8 failed stop requests", took.Seconds())
	if !strings.Contains(p.log(pod.ID), "trying again") {
		t.Errorf("no retry line in the guard log:\n%s", p.log(pod.ID))
	}
	if st := p.status(other.ID); st != provider.StatusRunning {
		t.Errorf("other pod is %s", st)
	}
}

// TestPodKeyScope: a pod's key cannot stop another pod, and a second guard for one pod exits.
func TestPodKeyScope(t *testing.T) {
	p := newPods(t)
	a := p.create(t, provider.Limits{IdleStop: time.Hour}, nil)
	b := p.create(t, provider.Limits{IdleStop: time.Hour}, nil)
	for end := time.Now().Add(10 * time.Second); p.status(b.ID) != provider.StatusRunning && time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
	}
	var keyA string
	for _, v := range p.srv.Pods() {
		if v.ID == a.ID {
			keyA = v.PodKey
		}
	}
	ca, err := runpod.New(runpod.Options{APIKey: secret.New(keyA), APIURL: p.srv.RESTURL(), MinBackoff: time.Millisecond, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Stop(context.Background(), b.ID); err == nil {
		t.Fatal("pod A's key stopped pod B")
	}
	if st := p.status(b.ID); st != provider.StatusRunning {
		t.Fatalf("pod B is %s", st)
	}
	// Two guards, one pod: the second says who holds the lock and exits.
	dir := filepath.Join(p.root, a.ID, "guard")
	deadline := time.Now().Add(20 * time.Second)
	for !fileExists(filepath.Join(dir, "state.json")) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	second := exec.Command(testkit.Scopectl(t), "guard", "--dir", dir, "--idle-stop", "1s", "--no-gpu", "--no-procs")
	second.Env = []string{"HOME=" + t.TempDir(), "RUNPOD_POD_ID=" + a.ID, "RUNPOD_API_KEY=" + keyA, "RUNPOD_API_URL=" + p.srv.RESTURL()}
	out, err := second.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another guard is running") {
		t.Fatalf("second guard: %v: %s", err, out)
	}
	if strings.Count(strings.TrimSpace(string(out)), "\n") > 0 {
		t.Errorf("not one line: %q", out)
	}
	if strings.Contains(string(out), keyA) {
		t.Error("the pod key was printed")
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestGuardLosesAPI: the API drops the connection when the guard starts (it cannot
// read the pod's start: max-hours counts from its own start) and on every stop for a
// while: the guard backs off between stops, stops its pod once the API answers, and
// nothing else is ever stopped (the pod key is refused nothing, the other pods run).
func TestGuardLosesAPI(t *testing.T) {
	p := newPods(t)
	other := p.create(t, provider.Limits{IdleStop: time.Hour}, nil)
	unguarded := p.create(t, provider.Limits{IdleStop: time.Second}, map[string]string{"TEST_NO_GUARD": "1"})
	p.srv.Inject(runpodtest.Fault{Route: "GET /pods/{id}", Kind: runpodtest.DropBeforeApply, Times: 50})
	p.srv.Inject(runpodtest.Fault{Route: "POST /pods/{id}/stop", Kind: runpodtest.DropBeforeApply, Times: 12})
	t0 := time.Now()
	pod := p.create(t, provider.Limits{IdleStop: 2 * time.Second, MaxHours: 1}, nil)
	took := p.waitExited(t, pod.ID, t0, 2*time.Second+60*time.Second)
	stops := p.srv.Count("POST /pods/{id}/stop")
	t.Logf("API lost for the start read and 12 stop requests: stopped %.1fs after create (idle limit 2s), %d stop requests in all", took.Seconds(), stops)
	log := p.log(pod.ID)
	if !strings.Contains(log, "cannot read the pod's start") || !strings.Contains(log, "trying again in") {
		t.Errorf("guard log:\n%s", log)
	}
	// Backing off: far fewer requests than checks every 300 ms would make with the
	// client's retries on each.
	if stops < 13 || stops > 40 {
		t.Errorf("%d stop requests", stops)
	}
	if s := p.stopFile(t, pod.ID); s.Kind != guard.KindIdle || s.Target != pod.ID {
		t.Errorf("stop.json %+v", s)
	}
	for _, o := range []*provider.Pod{other, unguarded} {
		if st := p.status(o.ID); st != provider.StatusRunning {
			t.Errorf("pod %s is %s", o.ID, st)
		}
	}
	if _, refused := p.srv.PodKeyRequests(); refused != 0 {
		t.Errorf("%d pod-key requests refused", refused)
	}
}
