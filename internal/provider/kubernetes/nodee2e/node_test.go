// Package nodee2e runs scopectl against a whole Kubernetes cluster on this machine with
// one real node (kubetest.StartNode): etcd, kube-apiserver, kube-scheduler,
// kube-controller-manager, containerd and a real kubelet running FROM-scratch images
// pulled from a local docker-registry. Nothing is played by the test: the StatefulSet
// and Job controllers make the pods, the scheduler places them on the node's GPUs, the
// kubelet runs them with runc, and scopectl reaches them only through the API server
// (port-forward, exec, logs), as it would on a GPU cloud.
//
// The pods use the host's network (hostNetwork, on loopback); the API server serves on
// the kubernetes Service's ClusterIP, so the guard container's in-cluster client reaches
// it without kube-proxy.
package nodee2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daydreamlive/scopectl/internal/aitk/aitktest"
	"github.com/daydreamlive/scopectl/internal/dataset/mediatest"
	"github.com/daydreamlive/scopectl/internal/deploy/deploytest"
	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes/kubetest"
	"github.com/daydreamlive/scopectl/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

const hfToken = "hf_NODEe2eCANARYneverPRINTED0123"

type cli struct {
	t   *testing.T
	bin string
	env []string
}

func (c *cli) run(args ...string) (string, string, int) {
	c.t.Helper()
	out, errs, code := testkit.RunCode(c.t, c.bin, c.env, args...)
	if strings.Contains(out+errs, hfToken) {
		c.t.Fatalf("scopectl %v printed HF_TOKEN", args)
	}
	return out, errs, code
}

func (c *cli) must(args ...string) string {
	c.t.Helper()
	out, errs, code := c.run(args...)
	if code != 0 {
		c.t.Fatalf("scopectl %s: exit %d\n%s\n%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// images pushes the three images a user would have: Scope (the stand-in), scopectl
// (the agent, the guard, the trainer's binary) and ai-toolkit (the stand-in as python,
// with a shell and its tools: exec runs sh scripts in it, as in ostris/aitoolkit).
func images(t *testing.T, n *kubetest.Node) (scope, agent, aitk string) {
	scope = n.Reg.Push(deploytest.Image{Args: []string{"--load-delay", "200ms"}})
	bin := testkit.Scopectl(t)
	agent = n.Image(t, "scopectl", map[string]string{"usr/local/bin/scopectl": bin, "tmp": ""},
		"ENV PATH=/usr/local/bin:/usr/bin:/bin\n")
	py := aitktest.Build(t)
	busybox, err := exec.LookPath("busybox")
	testkit.Need(t, err == nil, "no busybox (Debian: busybox-static): the ai-toolkit stand-in image needs a shell")
	files := map[string]string{"bin/busybox": busybox, "usr/bin/python": py, "usr/bin/python3": py, "usr/local/bin/python": py,
		"app/ai-toolkit/run.py": filepath.Join(t.TempDir()), "tmp": "", "root": ""}
	empty := filepath.Join(t.TempDir(), "run.py")
	os.WriteFile(empty, nil, 0o644)
	files["app/ai-toolkit/run.py"] = empty
	list, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range strings.Fields(string(list)) {
		if a != "busybox" && a != "python" && a != "python3" {
			files["bin/"+a] = "->busybox"
		}
	}
	aitk = n.Image(t, "aitoolkit", files,
		"ENV PATH=/usr/local/bin:/usr/bin:/bin HOME=/root PYTHONUNBUFFERED=1\nWORKDIR /app/ai-toolkit\n")
	return scope, agent, aitk
}

type deployJSON struct {
	Replicas []kubernetes.Replica `json:"replicas"`
	ReadyIn  float64              `json:"ready_in_s"`
}

// TestScopeAndTrainingOnARealNode deploys Scope with its agent and guard, installs a
// LoRA and loads the pipeline in the replica, reads status and logs, scales to zero and
// back (the volume keeps the LoRA), runs a training Job whose checkpoints reach the
// library, lets the guard scale an idle deployment to zero with its own ServiceAccount,
// and checks what a user gets wrong: an image that cannot be pulled, more GPUs than the
// node has.
func TestScopeAndTrainingOnARealNode(t *testing.T) {
	n := kubetest.StartNode(t, kubetest.NodeOptions{GPUs: 2, PVs: 8})
	scopeImg, agentImg, aitkImg := images(t, n)
	ns := n.Namespace(t, "studio")
	root := t.TempDir()
	c := &cli{t: t, bin: testkit.Scopectl(t), env: append(os.Environ(), "HOME="+root, "SCOPECTL_DATA_DIR="+filepath.Join(root, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(root, "xdg"), "HF_TOKEN="+hfToken, "KUBECONFIG="+kubetest.Kubeconfig(t, root, n.Config, "lab", ns))}
	ctx := context.Background()
	target := "k8s://lab/" + ns + "/scope"

	// Deploy: apply, the controllers and the kubelet bring the replica up, its agent
	// gets the LoRA onto the volume and Scope loads it.
	style := filepath.Join(root, "style.safetensors")
	if err := loratest.Write(style, loratest.Spec{Base: lora.BaseT2V1_3B}); err != nil {
		t.Fatal(err)
	}
	c.must("lora", "add", style)
	deployArgs := []string{"deploy", "--host", target, "--image", scopeImg, "--agent-image", agentImg, "--host-network",
		"--gpu", "nvidia.com/gpu=1", "--volume-size", "1Gi", "--lora", "style:0.8", "--pipeline", "longlive", "--wait", "3m"}
	t0 := time.Now()
	out := c.must(append(deployArgs, "--json")...)
	var dj deployJSON
	if err := json.Unmarshal([]byte(out), &dj); err != nil || len(dj.Replicas) != 1 || !dj.Replicas[0].Ready || dj.Replicas[0].Node != kubetest.NodeName {
		t.Fatalf("deploy: %v\n%s", err, out)
	}
	t.Logf("deploy: applied to Ready in %.1f s (replica %s: %v from its start), LoRA and pipeline in %v",
		dj.ReadyIn, dj.Replicas[0].Name, dj.Replicas[0].ReadyIn, time.Since(t0).Round(100*time.Millisecond))
	if !strings.Contains(out, `"loaded"`) {
		t.Fatalf("the pipeline did not load:\n%s", out)
	}
	// The LoRA is on the replica's volume (the hostPath PV the claim bound).
	pvc, err := n.CS.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "workspace-scope-0", metav1.GetOptions{})
	if err != nil || pvc.Spec.VolumeName == "" {
		t.Fatalf("claim: %v", err)
	}
	onVolume := filepath.Join(n.PVDir, pvc.Spec.VolumeName, "models", "lora", "style.safetensors")
	if _, err := os.Stat(onVolume); err != nil {
		t.Fatalf("the LoRA is not on the volume: %v", err)
	}
	// A second deploy changes nothing on the cluster and nothing on the volume.
	if out := c.must(deployArgs...); strings.Count(out, "unchanged") < 6 {
		t.Fatalf("second deploy:\n%s", out)
	}
	// The pod's containers are the real ones, HF_TOKEN reached Scope from the Secret.
	pod, err := n.CS.CoreV1().Pods(ns).Get(ctx, "scope-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if !cs.Ready || cs.State.Running == nil {
			t.Fatalf("container %s: %+v\n%s", cs.Name, cs.State, n.PodEvents(ns, "scope-0"))
		}
	}

	// status asks the replica's Scope through a port-forward; logs come from the kubelet.
	st := c.must("status", target)
	for _, want := range []string{"scope-0", "longlive (loaded)", "style:0.8"} {
		if !strings.Contains(st, want) {
			t.Fatalf("status lacks %q:\n%s", want, st)
		}
	}
	if lg := c.must("logs", target, "-n", "50"); !strings.Contains(lg, "longlive") {
		t.Fatalf("logs:\n%s", lg)
	}

	// sync --to the deployment: a library LoRA onto every ready replica's volume through
	// its agent, as to a RunPod pod's agent; again, nothing is sent.
	motion := filepath.Join(root, "motion.safetensors")
	if err := loratest.Write(motion, loratest.Spec{Base: lora.BaseT2V1_3B, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	c.must("lora", "add", motion)
	if out := c.must("sync", "motion", "--to", target); !strings.Contains(out, "scope-0") {
		t.Fatalf("sync to the deployment:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(onVolume), "motion.safetensors")); err != nil {
		t.Fatalf("sync: not on the volume: %v", err)
	}
	var sj struct {
		Replicas []struct {
			Replica string `json:"replica"`
			Result  struct {
				Actions []struct {
					Op string `json:"op"`
				} `json:"actions"`
			} `json:"result"`
		} `json:"replicas"`
	}
	json.Unmarshal([]byte(c.must("sync", "motion", "--to", target, "--json")), &sj)
	if len(sj.Replicas) != 1 || len(sj.Replicas[0].Result.Actions) != 1 || sj.Replicas[0].Result.Actions[0].Op == "put" {
		t.Fatalf("second sync: %+v", sj)
	}

	// Scale to zero: the pod goes (the GPU and, on this one node, the host's ports are
	// free), the claim stays.
	c.must("pod", "stop", target)
	waitFor(t, "scope-0 gone", time.Minute, func() error {
		if _, err := n.CS.CoreV1().Pods(ns).Get(ctx, "scope-0", metav1.GetOptions{}); err == nil {
			return fmt.Errorf("still there")
		}
		return nil
	})
	if out := c.must("pod", "get", target); !strings.Contains(out, "EXITED") {
		t.Fatalf("pod get after stop:\n%s", out)
	}
	if _, errs, code := c.run("sync", "motion", "--to", target); code == 0 || !strings.Contains(errs, "no replica is ready") {
		t.Fatalf("sync to a stopped deployment: exit %d %s", code, errs)
	}

	// Bad input, in one line each: an image that cannot be pulled (said at once, not
	// at the timeout), more GPUs than the node has (the scheduler's words).
	t.Run("bad input", func(t *testing.T) {
		t3 := time.Now()
		defer c.run("pod", "rm", "k8s://lab/"+ns+"/nopull", "--yes")
		_, errs, code := c.run("deploy", "--host", "k8s://lab/"+ns+"/nopull", "--image", n.Reg.Addr+"/nope:missing", "--agent-image", "-",
			"--host-network", "--gpu", "nvidia.com/gpu=1", "--volume-size", "1Gi", "--wait", "2m")
		last := lastLine(errs)
		if code == 0 || !strings.Contains(last, "nopull") || !strings.Contains(last, "cannot be pulled") || time.Since(t3) > 90*time.Second {
			t.Fatalf("an image that cannot be pulled: exit %d after %v:\n%s", code, time.Since(t3), errs)
		}
		t.Logf("no such image, after %v: %s", time.Since(t3).Round(100*time.Millisecond), last)
		// Its pod is bound to the node, holding the host's ports: remove it first.
		c.must("pod", "rm", "k8s://lab/"+ns+"/nopull", "--yes")
		defer c.run("pod", "rm", "k8s://lab/"+ns+"/big", "--yes")
		_, errs, code = c.run("deploy", "--host", "k8s://lab/"+ns+"/big", "--image", scopeImg, "--agent-image", "-",
			"--host-network", "--gpu", "nvidia.com/gpu=3", "--volume-size", "1Gi", "--wait", "10s")
		last = lastLine(errs)
		if code == 0 || !strings.Contains(last, "Insufficient nvidia.com/gpu") {
			t.Fatalf("three GPUs on a node of two: exit %d:\n%s", code, errs)
		}
		t.Logf("too many GPUs: %s", last)
	})

	// Training: a Job on the node, driven through exec and the agent sidecar; its
	// checkpoints reach the library and the Job completes.
	t.Run("train", func(t *testing.T) {
		data := t.TempDir()
		for i := range 3 {
			os.WriteFile(filepath.Join(data, fmt.Sprintf("img%d.jpg", i)), mediatest.JPEG(64+16*i, 64, 1), 0o644)
			os.WriteFile(filepath.Join(data, fmt.Sprintf("img%d.txt", i)), []byte(fmt.Sprintf("a painting, number %d", i)), 0o644)
		}
		cfg := filepath.Join(root, "job.json")
		os.WriteFile(cfg, []byte(aitktest.Config{Name: "node_lora", Steps: 30, SaveEvery: 10, Keep: 3,
			Dataset: data, TrainingFolder: "/workspace/output"}.JSON()), 0o600)
		t2 := time.Now()
		out, errs, code := c.run("train", "run", cfg, "--target", "k8s://lab/"+ns+"/node-lora", "--image", aitkImg, "--agent-image", agentImg,
			"--host-network", "--gpu", "nvidia.com/gpu=1", "--volume-size", "1Gi", "--no-prepull", "--wait", "3m",
			"--env", aitktest.EnvStepMS+"=30")
		if code != 0 {
			t.Fatalf("train run: exit %d\n%s\n%s", code, out, errs)
		}
		t.Logf("train run: %v from apply to the last checkpoint collected", time.Since(t2).Round(100*time.Millisecond))
		ls := c.must("lora", "ls")
		if strings.Count(ls, "node_lora") < 3 { // the saves at steps 10 and 20, and the final one
			t.Fatalf("checkpoints in the library:\n%s\n(train run said %s)", ls, out)
		}
		t.Logf("library:\n%s", ls)
		// Later commands reach the job through what train run recorded.
		if st := c.must("train", "ls"); !strings.Contains(st, "node_lora") || !strings.Contains(st, "done") {
			t.Fatalf("train ls:\n%s", st)
		}
		// Released: the holder ends, the Job completes and gives the GPU back.
		waitJobComplete(t, n, ns, "node-lora")
	})

	// Stop and resume on the Job's pod: the stop goes through exec into the job
	// database; the resumed run continues from its last checkpoint to the end, and the
	// final LoRA reaches the library.
	t.Run("train stop and resume", func(t *testing.T) {
		data := t.TempDir()
		for i := range 2 {
			os.WriteFile(filepath.Join(data, fmt.Sprintf("img%d.jpg", i)), mediatest.JPEG(64, 64+16*i, 1), 0o644)
			os.WriteFile(filepath.Join(data, fmt.Sprintf("img%d.txt", i)), []byte(fmt.Sprintf("a drawing, number %d", i)), 0o644)
		}
		cfg := filepath.Join(root, "job2.json")
		os.WriteFile(cfg, []byte(aitktest.Config{Name: "node_lora2", Steps: 40, SaveEvery: 10, Keep: 4,
			Dataset: data, TrainingFolder: "/workspace/output"}.JSON()), 0o600)
		out := c.must("train", "run", cfg, "--target", "k8s://lab/"+ns+"/node-lora2", "--image", aitkImg, "--agent-image", agentImg,
			"--host-network", "--gpu", "nvidia.com/gpu=1", "--volume-size", "1Gi", "--no-prepull", "--wait", "3m",
			"--env", aitktest.EnvStepMS+"=150", "--detach", "--json")
		var rr struct {
			Job struct {
				ID string `json:"id"`
			} `json:"job"`
		}
		if err := json.Unmarshal([]byte(out), &rr); err != nil || rr.Job.ID == "" {
			t.Fatalf("train run --detach: %v\n%s", err, out)
		}
		id := rr.Job.ID
		status := func() (phase string, step int) {
			var st struct {
				State struct {
					Phase string `json:"phase"`
					Step  int    `json:"step"`
				} `json:"state"`
			}
			json.Unmarshal([]byte(c.must("train", "status", id, "--json")), &st)
			return st.State.Phase, st.State.Step
		}
		waitFor(t, "step 12", 2*time.Minute, func() error {
			if ph, step := status(); step < 12 {
				return fmt.Errorf("%s at step %d", ph, step)
			}
			return nil
		})
		c.must("train", "stop", id)
		waitFor(t, "the job stopped", time.Minute, func() error {
			if ph, step := status(); ph != "stopped" {
				return fmt.Errorf("%s at step %d", ph, step)
			}
			return nil
		})
		_, stoppedAt := status()
		t5 := time.Now()
		c.must("train", "resume", id) // on the same pod (it lingers), watched to the end
		// Collected and released: the Job completes; status then answers from the record
		// (its pod has ended: nothing to exec in).
		waitJobComplete(t, n, ns, "node-lora2")
		ph, step := status()
		if ph != "done" || step != 40 {
			t.Fatalf("after resume: %s at step %d", ph, step)
		}
		if out := c.must("train", "status", id); !strings.Contains(out, "as recorded when it ended") {
			t.Fatalf("status of a released job:\n%s", out)
		}
		t.Logf("stopped at step %d; resumed to step 40 in %v", stoppedAt, time.Since(t5).Round(100*time.Millisecond))
		// The ended pod's own log, through the API server: the holder was released.
		if lg := c.must("train", "logs", id, "--container", "train"); !strings.Contains(lg, "released") {
			t.Fatalf("train logs --container train:\n%s", lg)
		}
		if ls := c.must("lora", "ls"); strings.Count(ls, "node_lora2") < 2 {
			t.Fatalf("checkpoints in the library:\n%s", ls)
		}
	})

	// Back up: the replica returns with the LoRA still on its volume.
	t1 := time.Now()
	c.must("pod", "start", target)
	waitFor(t, "scope-0 ready again", 2*time.Minute, func() error {
		p, err := n.CS.CoreV1().Pods(ns).Get(ctx, "scope-0", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("not ready: %s", n.PodEvents(ns, "scope-0"))
	})
	t.Logf("pod start: Ready again in %v", time.Since(t1).Round(100*time.Millisecond))
	if _, err := os.Stat(onVolume); err != nil {
		t.Fatalf("the LoRA left the volume over a stop: %v", err)
	}

	// The guard: deployed again with a short idle limit, it finds Scope idle and scales
	// its own StatefulSet to zero through the API server with its ServiceAccount.
	t.Run("guard", func(t *testing.T) {
		c.must(append(deployArgs[:len(deployArgs)-6:len(deployArgs)-6], "--idle-stop", "3s", "--wait", "3m")...)
		t4 := time.Now()
		waitFor(t, "the guard's stop", 2*time.Minute, func() error {
			s, err := n.CS.AppsV1().StatefulSets(ns).Get(ctx, "scope", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if s.Spec.Replicas != nil && *s.Spec.Replicas == 0 && s.Annotations[kubernetes.AnnoStoppedBy] != "" {
				return nil
			}
			return fmt.Errorf("replicas %v", *s.Spec.Replicas)
		})
		t.Logf("guard: scaled to zero %v after the deploy returned", time.Since(t4).Round(100*time.Millisecond))
		if out := c.must("pod", "get", target); !strings.Contains(out, "by guard (idle)") {
			t.Fatalf("pod get after the guard's stop:\n%s", out)
		}
	})
}

// waitJobComplete waits for Job name to complete (its pod released and ended 0).
func waitJobComplete(t *testing.T, n *kubetest.Node, ns, name string) {
	t.Helper()
	waitFor(t, "Job "+name+" complete", 2*time.Minute, func() error {
		j, err := n.CS.BatchV1().Jobs(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range j.Status.Conditions {
			switch {
			case c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue:
				return nil
			case c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue:
				t.Fatalf("Job %s failed: %s", name, c.Message)
			}
		}
		return fmt.Errorf("running")
	})
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}

func waitFor(t *testing.T, what string, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
