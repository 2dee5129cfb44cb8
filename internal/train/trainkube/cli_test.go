package trainkube

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/daydreamlive/scopectl/internal/aitk/aitktest"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes/kubetest"
	"github.com/daydreamlive/scopectl/internal/testkit"
)

func scopectl(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	return testkit.RunCode(t, testkit.Scopectl(t), env, args...)
}

func cliEnv(t *testing.T, kubeconfig string) ([]string, string) {
	root := t.TempDir()
	cfg := filepath.Join(root, "job.json")
	os.WriteFile(cfg, []byte(aitktest.Config{Name: "Wan LoRA", Steps: 10, SaveEvery: 5, Keep: 2,
		Dataset: aitktest.Dataset(t, 2, false), TrainingFolder: "output"}.JSON()), 0o600)
	env := append(os.Environ(), "HOME="+root, "SCOPECTL_DATA_DIR="+filepath.Join(root, "data"), "XDG_CONFIG_HOME="+filepath.Join(root, "xdg"),
		"HF_TOKEN="+hfToken, "KUBECONFIG="+kubeconfig)
	return env, cfg
}

// --dry-run -o yaml prints the manifests offline (the API server in the kubeconfig is
// never asked), without a secret value.
func TestDryRunYAMLOffline(t *testing.T) {
	t.Parallel()
	kc := kubetest.Kubeconfig(t, t.TempDir(), &rest.Config{Host: "https://127.0.0.1:1"}, "lab", "studio")
	env, cfg := cliEnv(t, kc)
	out, errs, code := scopectl(t, env, "train", "run", cfg, "--provider", "kubernetes", "--gpu", "nvidia.com/gpu=2",
		"--node-selector", "gpu=h100", "--toleration", "nvidia.com/gpu:NoSchedule", "--dry-run", "-o", "yaml")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"# Secret studio/wan-lora-", "keys HF_TOKEN, SCOPECTL_AGENT_TOKEN", "kind: PersistentVolumeClaim", "kind: Job",
		"backoffLimit: 0", "nvidia.com/gpu: \"2\"", "gpu: h100", "restartPolicy: Never", "image: ostris/aitoolkit:", "kube-hold", "kube-agent", "secretKeyRef"} {
		if !strings.Contains(out, want) {
			t.Errorf("yaml lacks %q", want)
		}
	}
	if strings.Contains(out+errs, hfToken) || strings.Contains(out, "kind: Secret") {
		t.Fatalf("a secret in the output:\n%s", out)
	}
	for _, bad := range [][]string{
		{"--provider", "runpod"},
		{"--provider", "kubernetes", "--aitk-dir", "/x"},
		{"--provider", "kubernetes", "--host", "ssh://root@h:22"},
		{"--provider", "kubernetes", "-o", "json", "--dry-run"},
		{"--provider", "kubernetes", "--gpu", "nvidia.com/gpu=x", "--dry-run", "-o", "yaml"},
		{"--target", "k8s://lab/studio/Bad_Name", "--dry-run", "-o", "yaml"},
	} {
		_, errs, code := scopectl(t, env, append([]string{"train", "run", cfg}, bad...)...)
		if code == 0 || strings.Count(strings.TrimSpace(errs), "\n") > 0 {
			t.Errorf("%v: exit %d: %q", bad, code, errs)
		}
	}
}

// Against the API server: the server-side dry run stores nothing; a run whose pod never
// comes (no job controller here) ends in one line saying so, and leaves the Job applied;
// applying it again changes nothing.
func TestRunAgainstAPIServer(t *testing.T) {
	t.Parallel()
	e := kubetest.Start(t)
	ns := e.Namespace(t)
	kc := kubetest.Kubeconfig(t, t.TempDir(), e.Config, "lab", ns)
	env, cfg := cliEnv(t, kc)
	out, errs, code := scopectl(t, env, "train", "run", cfg, "--target", "k8s://lab/"+ns+"/wan-a", "--dry-run")
	if code != 0 || !strings.Contains(out, "Job/wan-a: would be created") {
		t.Fatalf("dry run: %d\n%s\n%s", code, out, errs)
	}
	ctx := context.Background()
	if l, _ := e.CS.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{}); len(l.Items) != 0 {
		t.Fatal("the dry run stored a Job")
	}
	// A dataset with no usable items: refused before any Job is applied (no GPU taken).
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(aitktest.Config{Name: "bad", Steps: 10, SaveEvery: 5, Keep: 2, Dataset: t.TempDir(), TrainingFolder: "output"}.JSON()), 0o600)
	_, errs, code = scopectl(t, env, "train", "run", bad, "--target", "k8s://lab/"+ns+"/wan-bad", "--wait", "3s")
	if code != 3 {
		t.Fatalf("a dataset with no items: exit %d:\n%s", code, errs)
	}
	if _, err := e.CS.BatchV1().Jobs(ns).Get(ctx, "wan-bad", metav1.GetOptions{}); err == nil {
		t.Fatal("a refused run applied its Job")
	}
	t0 := time.Now()
	_, errs, code = scopectl(t, env, "train", "run", cfg, "--target", "k8s://lab/"+ns+"/wan-a", "--wait", "3s", "--force")
	last := strings.TrimSpace(errs[strings.LastIndex(strings.TrimRight(errs, "\n"), "\n")+1:])
	if code == 0 || !strings.Contains(last, "job wan-a: not ready") || !strings.Contains(last, "no pod yet") {
		t.Fatalf("exit %d after %v:\n%s", code, time.Since(t0), errs)
	}
	if !strings.Contains(errs, "Job/wan-a created") || strings.Contains(errs, hfToken) {
		t.Fatalf("stderr:\n%s", errs)
	}
	t.Logf("no pod: %s", last)
	// The Job went with the failure (no pod may wait on a GPU for nothing); its claim stayed.
	if !strings.Contains(last, "Job wan-a deleted (no GPU held)") || !strings.Contains(last, "--target k8s://lab/"+ns+"/wan-a") {
		t.Fatalf("last line: %s", last)
	}
	if _, err := e.CS.BatchV1().Jobs(ns).Get(ctx, "wan-a", metav1.GetOptions{}); err == nil {
		t.Fatal("the Job of a failed run stayed")
	}
	_, errs, _ = scopectl(t, env, "train", "run", cfg, "--target", "k8s://lab/"+ns+"/wan-a", "--wait", "1s", "--force", "--detach")
	if !strings.Contains(errs, "PersistentVolumeClaim/wan-a-workspace unchanged") || !strings.Contains(errs, "Job/wan-a created") {
		t.Fatalf("second run:\n%s", errs)
	}
	if _, err := e.CS.BatchV1().Jobs(ns).Get(ctx, "wan-a", metav1.GetOptions{}); err == nil {
		t.Fatal("the Job of the second failed run stayed")
	}
	// A namespace that does not exist, no kubeconfig: one line each.
	for _, tc := range []struct {
		env        []string
		args, want string
	}{
		{env, "k8s://lab/no-such-ns", "namespace does not exist"},
		{append(append([]string{}, env...), "KUBECONFIG="+filepath.Join(t.TempDir(), "none")), "k8s://lab/" + ns, "no kubeconfig"},
	} {
		_, errs, code := scopectl(t, tc.env, "train", "run", cfg, "--target", tc.args, "--wait", "2s", "--force")
		lines := strings.Split(strings.TrimSpace(errs), "\n")
		last := lines[len(lines)-1]
		if code == 0 || !strings.HasPrefix(last, "scopectl train run: ") || !strings.Contains(last, tc.want) || strings.Contains(errs, hfToken) {
			t.Errorf("%s: exit %d: %q", tc.args, code, errs)
		}
	}
	// What stays is the workspace claim.
	if _, err := e.CS.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "wan-a-workspace", metav1.GetOptions{}); err != nil {
		t.Fatalf("claim: %v", err)
	}
}
