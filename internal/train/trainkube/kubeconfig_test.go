package trainkube

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daydreamlive/scopectl/internal/aitk/aitktest"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes/kubetest"
	"github.com/daydreamlive/scopectl/internal/train"
)

// A job run with --kubeconfig F keeps F's path with it: later commands reach the
// cluster from a shell without KUBECONFIG (and without ~/.kube/config), and an
// explicit --kubeconfig on them still wins. The run and the first status go through
// the Trainer with the played pod (Machines building its clients from the kubeconfig,
// as the CLI's do); then the scopectl binary, KUBECONFIG unset, reaches the same
// cluster through the record: train status up to the port-forward (the kubelet's part,
// which envtest has not), train resume creating the new Job.
func TestRecordedKubeconfig(t *testing.T) {
	t.Parallel()
	e, c := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kc := kubetest.Kubeconfig(t, t.TempDir(), e.Config, "lab", c.Namespace)
	root, checkout, cfg, k := jobOnPod(ctx, t, e, c, "kcfg-1", aitktest.Config{Name: "kcfglora", Steps: 20, SaveEvery: 10, Keep: 2})

	// train run --kubeconfig F: the trainer's Machines reach the cluster with F, and
	// the job records F (absolute).
	run := k.machines()
	run.Client, run.Kubeconfig = nil, kc
	defer run.Close()
	data := filepath.Join(root, "data")
	tr := trainer(t, data)
	tr.Dial = run.Open
	res, err := tr.Run(ctx, train.RunInput{Config: cfg, NoPrepull: true, Target: kubernetes.MachineURL(c.Target(), "kcfg-1"), PodID: "kcfg-1",
		AITKDir: checkout, Workspace: k.ws, Binary: filepath.Join(k.bin, "scopectl"), Force: true, Kubeconfig: kubernetes.KubeconfigInUse(kc),
		Env: []string{aitktest.EnvStepMS + "=20"}, Poll: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, k.holdOut.String())
	}
	id := res.Job.ID
	if rec, err := tr.Job(ctx, id); err != nil || rec.Kubeconfig != kc || res.Job.Kubeconfig != kc {
		t.Fatalf("recorded kubeconfig %q (result %q), want %q: %v", rec.Kubeconfig, res.Job.Kubeconfig, kc, err)
	}

	// A later command without --kubeconfig: the record reaches the cluster.
	later := k.machines()
	later.Client, later.KubeconfigOf = nil, tr.KubeconfigOf
	defer later.Close()
	tr.Dial = later.Open
	if st := waitState(ctx, t, tr, id, "done", func(st *train.State) bool { return train.Terminal(st.Phase) }); st.Phase != train.PhaseDone {
		t.Fatalf("job ended %s (%s)", st.Phase, st.Reason)
	}
	// An explicit kubeconfig wins over the record.
	bad := k.machines()
	bad.Client, bad.Kubeconfig, bad.KubeconfigOf = nil, filepath.Join(root, "none.yaml"), tr.KubeconfigOf
	tr.Dial = bad.Open
	// (the job has ended: status answers from its record, saying why the machine was
	// not asked)
	if res, err := tr.Status(ctx, id); err != nil || !res.Recorded || !strings.Contains(res.Unreachable, "none.yaml") {
		t.Fatalf("status with an explicit kubeconfig that is not there: %+v %v", res, err)
	}
	tr.Dial = later.Open

	// The binary, in a shell without KUBECONFIG and with an empty home.
	home := t.TempDir()
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KUBECONFIG=") {
			env = append(env, kv)
		}
	}
	env = append(env, "HOME="+home, "SCOPECTL_DATA_DIR="+data, "XDG_CONFIG_HOME="+filepath.Join(home, "xdg"))
	lastLine := func(s string) string {
		ls := strings.Split(strings.TrimSpace(s), "\n")
		return ls[len(ls)-1]
	}
	// train status (the job has ended: when its machine is not reached it answers from
	// the record, saying why): the pod found and its agent token read through the
	// recorded kubeconfig; only the port-forward, a kubelet's part, is missing here.
	unreachable := func(args ...string) string {
		t.Helper()
		out, errs, code := scopectl(t, env, append([]string{"train", "status", "--json"}, args...)...)
		var res train.StatusResult
		if err := json.Unmarshal([]byte(out), &res); code != 0 || err != nil || !res.Recorded || res.State.Phase != train.PhaseDone {
			t.Fatalf("train status %v: exit %d %v:\n%s\n%s", args, code, err, out, errs)
		}
		return res.Unreachable
	}
	if why := unreachable(id); !strings.Contains(why, "port-forward to "+k.pod) || strings.Contains(why, "no kubeconfig") {
		t.Fatalf("train status, KUBECONFIG unset: %s", why)
	}
	// --kubeconfig on the later command wins.
	if why := unreachable(id, "--kubeconfig", filepath.Join(root, "none.yaml")); !strings.Contains(why, "none.yaml") {
		t.Fatalf("train status --kubeconfig none.yaml: %s", why)
	}
	// A job on another Job of the cluster recorded without a kubeconfig: nothing reaches
	// the cluster from this shell.
	bare := res.Job
	bare.ID, bare.Kubeconfig = id+"-bare", ""
	bare.Target, bare.PodID = kubernetes.MachineURL(c.Target(), "kcfg-bare"), "kcfg-bare"
	if err := tr.Jobs.PutTrainJob(ctx, bare); err != nil {
		t.Fatal(err)
	}
	// (recorded as still starting: nothing to answer from, the error itself)
	if _, errs, code := scopectl(t, env, "train", "status", bare.ID); code == 0 || !strings.Contains(lastLine(errs), "no kubeconfig") {
		t.Fatalf("train status of a job without a recorded kubeconfig: exit %d:\n%s", code, errs)
	}
	// train ls shows the path, never the kubeconfig's content.
	out, errs, code := scopectl(t, env, "train", "ls", "--json")
	if code != 0 || !strings.Contains(out, `"kubeconfig": "`+kc+`"`) {
		t.Fatalf("train ls --json: exit %d:\n%s\n%s", code, out, errs)
	}
	for _, s := range []string{e.Config.BearerToken, base64.StdEncoding.EncodeToString(e.Config.KeyData)} {
		if s != "" && strings.Contains(out+errs, s) {
			t.Fatal("a credential of the kubeconfig in train ls")
		}
	}

	// The pod released and ended: train resume makes a new Job like the old one over
	// the same claim, through the recorded kubeconfig (its pod never comes here).
	if err := tr.Release(ctx, res.Job); err != nil {
		t.Fatal(err)
	}
	select {
	case <-k.holdDone:
	case <-time.After(20 * time.Second):
		t.Fatalf("the holder did not end:\n%s", k.holdOut.String())
	}
	e.PodStatus(t, c.Namespace, k.pod, corev1.PodStatus{Phase: corev1.PodSucceeded})
	_, errs, code = scopectl(t, env, "train", "resume", id, "--wait", "1s", "--detach")
	if code == 0 || strings.Contains(errs, "no kubeconfig") || !strings.Contains(errs, "not ready") {
		t.Fatalf("train resume, KUBECONFIG unset: exit %d:\n%s", code, errs)
	}
	jobs, err := e.CS.BatchV1().Jobs(c.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, j := range jobs.Items {
		names = append(names, j.Name)
	}
	if len(names) != 2 || !strings.HasPrefix(names[0], "kcfg-") || !strings.HasPrefix(names[1], "kcfg-") || !strings.Contains(strings.Join(names, " "), "kcfg-1") {
		t.Fatalf("Jobs after the resume: %v", names)
	}
	t.Logf("train resume, KUBECONFIG unset: Jobs %v; %s", names, lastLine(errs))
}
