// Package trainkube runs `scopectl train` on a Kubernetes Job against a real
// kube-apiserver (envtest). There is no kubelet: the test plays it, running the
// commands of the pod the API server holds (the init container, the agent sidecar, the
// holder) on this machine with the env the kubelet would give them (secretKeyRefs read
// from the Secret), and exec in the train container as a local sh. Everything else is
// the product's: the Job applied by server-side apply, the pod found by its labels, the
// agent token read from the Job's Secret, the Trainer reaching the pod's folders through
// its workspace agent, the supervisor running the ai-toolkit stand-in, checkpoints
// collected into the library, the pod released at the end.
package trainkube

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daydreamlive/scopectl/internal/aitk/aitktest"
	"github.com/daydreamlive/scopectl/internal/hub/hf/hftest"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes/kubetest"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/testkit"
	"github.com/daydreamlive/scopectl/internal/train"
	"github.com/daydreamlive/scopectl/internal/train/traintest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

const hfToken = "hf_KUBEtokenNEVERprinted0123456789"

// kubelet plays one pod of a training Job on this machine.
type kubelet struct {
	t         *testing.T
	e         *kubetest.Env
	c         *kubernetes.Client
	job, pod  string
	ws, bin   string // the workspace claim and the emptyDir, as local folders
	scopectl  string
	agentAddr string
	env       map[string][]string // per container, as the kubelet gives it
	hold      *exec.Cmd
	holdOut   *testkit.SyncBuffer
	holdDone  chan struct{}
	holdCode  int
	mu        sync.Mutex
	execs     int
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// local maps the pod's paths and ports to this machine's.
func (k *kubelet) local(argv []string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		switch {
		case a == "scopectl":
			a = k.scopectl
		case strings.HasPrefix(a, kubernetes.JobBinDir):
			a = k.bin + strings.TrimPrefix(a, kubernetes.JobBinDir)
		case strings.HasPrefix(a, kubernetes.JobWorkspace):
			a = k.ws + strings.TrimPrefix(a, kubernetes.JobWorkspace)
		case a == ":"+strconv.Itoa(kubernetes.AgentPort):
			a = k.agentAddr
		}
		out[i] = a
	}
	return out
}

// envOf resolves a container's env as a kubelet does (secretKeyRef from the Secret).
func (k *kubelet) envOf(ct corev1.Container) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + k.ws}
	for _, e := range ct.Env {
		v := e.Value
		if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil {
			s, err := k.e.CS.CoreV1().Secrets(k.c.Namespace).Get(context.Background(), r.SecretKeyRef.Name, metav1.GetOptions{})
			if err != nil {
				k.t.Fatalf("secretKeyRef %s: %v", e.Name, err)
			}
			v = string(s.Data[r.SecretKeyRef.Key])
		}
		env = append(env, e.Name+"="+v)
	}
	return env
}

// jobOnPod makes a checkout and cfg's job config (a dataset of two, output under the
// job folder) in a new folder, applies Job name and starts its pod; it returns the
// folder, the checkout, the config's path and the pod.
func jobOnPod(ctx context.Context, t *testing.T, e *kubetest.Env, c *kubernetes.Client, name string, cfg aitktest.Config) (string, string, string, *kubelet) {
	t.Helper()
	root := t.TempDir()
	checkout := filepath.Join(root, "aitk")
	aitktest.InstallCheckout(t, checkout)
	cfg.Dataset, cfg.TrainingFolder = aitktest.Dataset(t, 2, false), "output"
	path := filepath.Join(root, "job.json")
	os.WriteFile(path, []byte(cfg.JSON()), 0o600)
	if _, err := c.ApplyJob(ctx, kubernetes.TrainJobSpec{Name: name, Image: "ostris/aitoolkit:test", HostNetwork: true}, kubernetes.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	return root, checkout, path, startPod(t, e, c, name)
}

// startPod creates the Job's pod on the API server (the job controller's part) and
// runs its containers here (the kubelet's), then marks it Running and Ready.
func startPod(t *testing.T, e *kubetest.Env, c *kubernetes.Client, job string) *kubelet {
	return startPodOn(t, e, c, job, "")
}

// startPodOn is startPod with the workspace claim at ws ("": a new one).
func startPodOn(t *testing.T, e *kubetest.Env, c *kubernetes.Client, job, ws string) *kubelet {
	root := t.TempDir()
	if ws == "" {
		ws = filepath.Join(root, "workspace")
	}
	k := &kubelet{t: t, e: e, c: c, job: job, ws: ws, bin: filepath.Join(root, "opt-scopectl"),
		scopectl: testkit.Scopectl(t), agentAddr: "127.0.0.1:" + strconv.Itoa(freePort(t)), env: map[string][]string{}, holdDone: make(chan struct{})}
	os.MkdirAll(k.ws, 0o755)
	k.pod = e.JobPod(t, c.Namespace, job, corev1.PodStatus{Phase: corev1.PodPending})
	p, err := e.CS.CoreV1().Pods(c.Namespace).Get(context.Background(), k.pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec := p.Spec
	// Init: scopectl out of the agent image.
	initC := spec.InitContainers[0]
	if out, err := exec.Command(k.local(initC.Command)[0], k.local(initC.Command)[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("init container %s: %v\n%s", initC.Name, err, out)
	}
	if _, err := os.Stat(filepath.Join(k.bin, "scopectl")); err != nil {
		t.Fatalf("init container left no scopectl: %v", err)
	}
	// The agent sidecar.
	ag := spec.InitContainers[1]
	k.env[ag.Name] = k.envOf(ag)
	acmd := exec.Command(k.local(ag.Command)[0], k.local(ag.Command)[1:]...)
	acmd.Env = k.env[ag.Name]
	var alog testkit.SyncBuffer
	acmd.Stdout, acmd.Stderr = &alog, &alog
	testkit.KillWithParent(acmd)
	if err := acmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { acmd.Process.Kill(); acmd.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + k.agentAddr + "/v1/health") // the readiness probe's path
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent sidecar did not answer: %v\n%s", err, alog.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The main container: the holder, from the copied binary, in the ai-toolkit image's place.
	tr := spec.Containers[0]
	k.env[tr.Name] = k.envOf(tr)
	argv := k.local(tr.Command)
	argv = append(argv, "--poll", "100ms")
	k.hold = exec.Command(argv[0], argv[1:]...)
	k.hold.Env = k.env[tr.Name]
	k.holdOut = &testkit.SyncBuffer{}
	k.hold.Stdout, k.hold.Stderr = k.holdOut, k.holdOut
	testkit.KillWithParent(k.hold)
	if err := k.hold.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		k.hold.Wait()
		k.holdCode = k.hold.ProcessState.ExitCode()
		close(k.holdDone)
	}()
	t.Cleanup(func() { k.hold.Process.Kill(); <-k.holdDone })
	now := metav1.Now()
	e.PodStatus(t, c.Namespace, k.pod, corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}}})
	return k
}

// machines reaches the played pod: its agent directly, exec as sh here with the train
// container's env.
func (k *kubelet) machines() *kubernetes.Machines {
	return &kubernetes.Machines{Client: k.c, Env: remote.Env{Secrets: secret.Default, Options: map[string]string{}},
		Forward: func(ctx context.Context, c *kubernetes.Client, pod string, port int) (string, func(), error) {
			if pod != k.pod || port != kubernetes.AgentPort {
				return "", nil, fmt.Errorf("forward to %s:%d: no such pod here", pod, port)
			}
			return k.agentAddr, func() {}, nil
		},
		Exec: func(ctx context.Context, c *kubernetes.Client, pod, container string, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
			if pod != k.pod || container != kubernetes.TrainContainer {
				return -1, fmt.Errorf("exec in %s/%s: no such container here", pod, container)
			}
			k.mu.Lock()
			k.execs++
			k.mu.Unlock()
			cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
			cmd.Env = k.env[container]
			cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
			err := cmd.Run()
			if ee, ok := err.(*exec.ExitError); ok {
				return ee.ExitCode(), nil
			}
			if err != nil {
				return -1, err
			}
			return 0, nil
		}}
}

func setup(t *testing.T) (*kubetest.Env, *kubernetes.Client) {
	e := kubetest.Start(t)
	ns := e.Namespace(t)
	c, err := kubernetes.NewForConfig(e.Config, ns)
	if err != nil {
		t.Fatal(err)
	}
	c.Context = "lab"
	return e, c
}

func trainer(t *testing.T, data string) *train.Trainer {
	lib, err := library.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lib.Close() })
	return &train.Trainer{Lib: lib, Jobs: lib.Store.(store.TrainStore), Env: remote.Env{Secrets: secret.Default, Options: map[string]string{}},
		Notify: func(msg string) { t.Log(msg) }}
}

// train run on a Kubernetes Job → status → checkpoints in the library with their
// lineage → release → the Job's pod ends 0; HF_TOKEN reached the trainer from the Secret.
func TestTrainOnKubernetesJob(t *testing.T) {
	t.Parallel()
	e, c := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	root := t.TempDir()
	checkout := filepath.Join(root, "aitk")
	aitktest.InstallCheckout(t, checkout)
	cfg := filepath.Join(root, "job.json")
	os.WriteFile(cfg, []byte(aitktest.Config{Name: "kubelora", Steps: 40, SaveEvery: 10, Keep: 2, SampleEvery: 20,
		Dataset: aitktest.Dataset(t, 3, false), TrainingFolder: "output"}.JSON()), 0o600)

	t0 := time.Now()
	spec := kubernetes.TrainJobSpec{Name: "kubelora-1", Image: "ostris/aitoolkit:test", AgentImage: "scopectl:test", HostNetwork: true,
		SecretEnv: map[string]secret.Secret{kubernetes.SecretHFToken: secret.New(hfToken)}}
	if _, err := c.ApplyJob(ctx, spec, kubernetes.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	k := startPod(t, e, c, "kubelora-1")
	st, err := c.WaitJobRunning(ctx, "kubelora-1", nil)
	if err != nil || st.Pod != k.pod {
		t.Fatalf("wait: %+v %v", st, err)
	}
	t.Logf("%v: job applied, pod %s running", time.Since(t0).Round(time.Millisecond), k.pod)

	ms := k.machines()
	defer ms.Close()
	tr := trainer(t, filepath.Join(root, "data"))
	tr.Dial = ms.Open
	var notes testkit.SyncBuffer
	tr.Notify = func(msg string) { t.Log(msg); notes.Write([]byte(msg + "\n")) }
	// The pre-pull runs for real, in the pod, from a fake Hub holding the base model.
	hub := hftest.Start(t, hftest.Options{})
	hub.AddRepo(hftest.Repo{ID: traintest.BaseModel, Files: traintest.HubFiles()})
	res, err := tr.Run(ctx, train.RunInput{Config: cfg, Target: kubernetes.MachineURL(c.Target(), "kubelora-1"), PodID: "kubelora-1",
		AITKDir: checkout, Workspace: k.ws, Binary: filepath.Join(k.bin, "scopectl"), Force: true,
		Env: []string{aitktest.EnvStepMS + "=40", "HF_ENDPOINT=" + hub.URL()}, Poll: 100 * time.Millisecond, StopGrace: 3 * time.Second, KillGrace: 2 * time.Second})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, k.holdOut.String())
	}
	id := res.Job.ID
	if strings.Contains(notes.String(), "sending scopectl") {
		t.Error("scopectl was sent although the init container put the same build on the workspace")
	}
	if res.Job.Target != "k8s://lab/"+c.Namespace+"/kubelora-1" {
		t.Fatalf("recorded target %q", res.Job.Target)
	}
	t.Logf("%v: job %s started in the pod", time.Since(t0).Round(time.Millisecond), id)
	s, err := tr.Status(ctx, id)
	if err != nil || train.Terminal(s.State.Phase) && s.State.Phase != train.PhaseDone {
		t.Fatalf("status: %+v %v", s, err)
	}
	released := false
	out, err := tr.Watch(ctx, id, train.WatchOptions{Interval: 300 * time.Millisecond,
		StopMachine: func(ctx context.Context, job store.TrainJob) error {
			released = true
			return tr.Release(ctx, job)
		}})
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	if out.State.Phase != train.PhaseDone || !released {
		t.Fatalf("watch ended %s (%s), released %v", out.State.Phase, out.State.Reason, released)
	}
	t.Logf("%v: done, %d checkpoints collected", time.Since(t0).Round(time.Millisecond), len(out.Checkpoints))
	// 4 step saves (keep 2: the supervisor stages each) and the final one.
	cps, _ := tr.Jobs.ListTrainCheckpoints(ctx, id)
	if len(cps) < 4 {
		t.Fatalf("%d checkpoints collected: %+v", len(cps), cps)
	}
	for _, cp := range cps {
		en, err := tr.Lib.Store.GetBySHA(ctx, cp.SHA256)
		if err != nil {
			t.Fatalf("%s not in the library: %v", cp.File, err)
		}
		if err := tr.Lib.Check(ctx, en); err != nil {
			t.Fatal(err)
		}
		ok := false
		for _, o := range en.Origins {
			ok = ok || o.Kind == "training" && o.Job == id && o.Step == int64(cp.Step)
		}
		if !ok || cp.Loss == nil {
			t.Errorf("%s: lineage %+v loss %v", cp.File, en.Origins, cp.Loss)
		}
	}
	// The pod's holder ends once released: the Job would complete.
	select {
	case <-k.holdDone:
	case <-time.After(20 * time.Second):
		t.Fatalf("the holder did not end after the release:\n%s", k.holdOut.String())
	}
	if k.holdCode != 0 || !strings.Contains(k.holdOut.String(), "released") {
		t.Fatalf("holder exit %d:\n%s", k.holdCode, k.holdOut.String())
	}
	var logs bytes.Buffer
	if _, err := tr.Logs(ctx, id, 0, false, &logs); err != nil || !strings.Contains(logs.String(), "Saved checkpoint to") {
		t.Fatalf("logs: %v\n%s", err, logs.String())
	}
	// HF_TOKEN reached the trainer's environment from the Secret, not from a file or argv.
	spec2, _ := os.ReadFile(filepath.Join(res.Job.JobDir, train.SpecFile))
	if strings.Contains(string(spec2), hfToken) || !strings.Contains(strings.Join(k.env["train"], "\n"), "HF_TOKEN="+hfToken) {
		t.Fatal("HF_TOKEN: not from the Secret, or in the job's spec")
	}
	if _, err := os.Stat(filepath.Join(res.Job.JobDir, train.SecretsDir, "HF_TOKEN")); err == nil {
		t.Fatal("HF_TOKEN was written as a file on the volume")
	}
	// The base model was pulled into the workspace's HF cache in the pod before training.
	if _, err := os.Stat(filepath.Join(k.ws, "hf", "hub", "models--Wan-AI--Wan2.1-T2V-1.3B-Diffusers", "refs", "main")); err != nil {
		t.Errorf("pre-pull: %v", err)
	}
	t.Logf("%d commands ran through exec", k.execs)
}

// stop and save-now go through the job database, by exec in the train container.
func TestStopAndSaveNowOnKubernetes(t *testing.T) {
	t.Parallel()
	e, c := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	root, checkout, cfg, k := jobOnPod(ctx, t, e, c, "stoplora-1", aitktest.Config{Name: "stoplora", Steps: 2000, SaveEvery: 1000, Keep: 2})
	ms := k.machines()
	defer ms.Close()
	tr := trainer(t, filepath.Join(root, "data"))
	tr.Dial = ms.Open
	res, err := tr.Run(ctx, train.RunInput{Config: cfg, NoPrepull: true, Target: kubernetes.MachineURL(c.Target(), "stoplora-1"), PodID: "stoplora-1",
		AITKDir: checkout, Workspace: k.ws, Binary: filepath.Join(k.bin, "scopectl"), Force: true,
		Env: []string{aitktest.EnvStepMS + "=30"}, Poll: 100 * time.Millisecond, StopGrace: 5 * time.Second, KillGrace: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	id := res.Job.ID
	waitState(ctx, t, tr, id, "training", func(st *train.State) bool { return st.Phase == train.PhaseTraining && st.Step > 3 })
	if _, err := tr.SaveNow(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitState(ctx, t, tr, id, "a save-now checkpoint", func(st *train.State) bool { return len(st.Checkpoints) > 0 })
	st, err := tr.Stop(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stop: %s", st.Phase)
	st = waitState(ctx, t, tr, id, "stopped", func(st *train.State) bool { return train.Terminal(st.Phase) })
	if st.Phase != train.PhaseStopped || st.Escalated != "" {
		t.Fatalf("after stop: %s (%s), escalated %q", st.Phase, st.Reason, st.Escalated)
	}
	col, err := tr.Collect(ctx, id)
	if err != nil || len(col.Checkpoints) == 0 {
		t.Fatalf("collect: %+v %v", col, err)
	}
	// Released, the holder ends (stopped: exit 0) and the pod with it.
	if err := tr.Release(ctx, res.Job); err != nil {
		t.Fatal(err)
	}
	select {
	case <-k.holdDone:
	case <-time.After(20 * time.Second):
		t.Fatalf("the holder did not end:\n%s", k.holdOut.String())
	}
	if k.holdCode != 0 {
		t.Fatalf("holder exit %d:\n%s", k.holdCode, k.holdOut.String())
	}
	e.PodStatus(t, c.Namespace, k.pod, corev1.PodStatus{Phase: corev1.PodSucceeded})
	// Resume: a new Job like the old one over the same workspace claim (train resume's
	// path when the old pod has ended); the job's record points at it, and the same
	// Trainer.Resume starts a new supervisor there, from the newest checkpoint.
	spec, err := c.JobSpecOf(ctx, "stoplora-1")
	if err != nil || spec.Claim != "stoplora-1-workspace" {
		t.Fatalf("spec of the old job: %+v %v", spec, err)
	}
	spec.Name = "stoplora-2"
	if _, err := c.ApplyJob(ctx, spec, kubernetes.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	k2 := startPodOn(t, e, c, "stoplora-2", k.ws)
	ms2 := k2.machines()
	defer ms2.Close()
	tr.Dial = ms2.Open
	job, _ := tr.Job(ctx, id)
	job.Target, job.PodID = kubernetes.MachineURL(c.Target(), "stoplora-2"), "stoplora-2"
	if err := tr.Jobs.PutTrainJob(ctx, job); err != nil {
		t.Fatal(err)
	}
	last := st.Checkpoints[len(st.Checkpoints)-1].Step
	rs, err := tr.Resume(ctx, id)
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	waitState(ctx, t, tr, id, "training again", func(st *train.State) bool { return st.Run == 2 && st.Step > last })
	st2, err := tr.Stop(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	st2 = waitState(ctx, t, tr, id, "stopped again", func(st *train.State) bool { return train.Terminal(st.Phase) })
	if st2.Run != 2 || st2.ResumedAt != last {
		t.Fatalf("after resume: run %d, resumed from step %d, want %d (phase %s, %s; resume said %s)", st2.Run, st2.ResumedAt, last, st2.Phase, st2.Reason, rs.State.Phase)
	}
	t.Logf("resumed on a new Job from step %d", last)
}

func waitState(ctx context.Context, t *testing.T, tr *train.Trainer, id, what string, ok func(*train.State) bool) *train.State {
	t.Helper()
	for ctx.Err() == nil {
		s, err := tr.Status(ctx, id)
		if err == nil && ok(s.State) {
			return s.State
		}
		if err == nil && train.Terminal(s.State.Phase) {
			t.Fatalf("job ended (%s: %s) while waiting for %s", s.State.Phase, s.State.Reason, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
	return nil
}

// A forward that broke is made again by the next Open; a pod that is gone is one line.
func TestForwardMadeAgain(t *testing.T) {
	t.Parallel()
	e, c := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.ApplyJob(ctx, kubernetes.TrainJobSpec{Name: "fwd-1", Image: "ostris/aitoolkit:test", HostNetwork: true}, kubernetes.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	k := startPod(t, e, c, "fwd-1")
	ms := k.machines()
	defer ms.Close()
	forwards := 0
	ms.Forward = func(ctx context.Context, c *kubernetes.Client, pod string, port int) (string, func(), error) {
		forwards++
		if forwards == 1 {
			return "127.0.0.1:1", func() {}, nil // broken at once
		}
		return k.agentAddr, func() {}, nil
	}
	addr := kubernetes.MachineURL(c.Target(), "fwd-1") + k.ws + "/x"
	if _, err := ms.Open(ctx, addr); err == nil || !strings.Contains(err.Error(), "agent sidecar of pod "+k.pod) {
		t.Fatalf("open through a broken forward: %v", err)
	}
	r, err := ms.Open(ctx, addr)
	if err != nil || forwards != 2 {
		t.Fatalf("open again: %v (%d forwards)", err, forwards)
	}
	out, code, err := r.(remote.Runner).Run(ctx, "echo hello; exit 3")
	if err != nil || code != 3 || out != "hello\n" {
		t.Fatalf("run: %q %d %v", out, code, err)
	}
	r.Close()
	e.PodStatus(t, c.Namespace, k.pod, corev1.PodStatus{Phase: corev1.PodSucceeded})
	ms.Forward = func(ctx context.Context, c *kubernetes.Client, pod string, port int) (string, func(), error) {
		return "127.0.0.1:1", func() {}, nil
	}
	ms.Close()
	if _, err := ms.Open(ctx, addr); err == nil || !strings.Contains(err.Error(), "it has no running pod") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("open after the pod ended: %v", err)
	}
}
