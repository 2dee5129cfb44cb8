package kubernetes_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/provider/kubernetes"
)

func writeKubeconfig(t *testing.T, path, ctxName, ns string) {
	t.Helper()
	y := "apiVersion: v1\nkind: Config\nclusters:\n- name: c-" + ctxName + "\n  cluster:\n    server: https://127.0.0.1:1\n" +
		"users:\n- name: u-" + ctxName + "\n  user:\n    token: tok-" + ctxName + "-NEVERprinted\n" +
		"contexts:\n- name: " + ctxName + "\n  context:\n    cluster: c-" + ctxName + "\n    user: u-" + ctxName + "\n    namespace: " + ns + "\n"
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
}

// The kubeconfig recorded with a training job: --kubeconfig made absolute, else
// $KUBECONFIG's files made absolute (a list stays a list, and New merges it as
// client-go merges KUBECONFIG), else nothing. Paths only.
func TestKubeconfigInUse(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	writeKubeconfig(t, filepath.Join(dir, "a.yaml"), "lab", "studio")
	writeKubeconfig(t, filepath.Join(dir, "b.yaml"), "prod", "render")

	t.Setenv("KUBECONFIG", "")
	if got := kubernetes.KubeconfigInUse(""); got != "" {
		t.Errorf("no kubeconfig given: %q", got)
	}
	if got := kubernetes.KubeconfigInUse("a.yaml"); got != filepath.Join(dir, "a.yaml") {
		t.Errorf("--kubeconfig a.yaml: %q", got)
	}
	list := "a.yaml" + string(filepath.ListSeparator) + filepath.Join(dir, "b.yaml")
	t.Setenv("KUBECONFIG", list)
	want := filepath.Join(dir, "a.yaml") + string(filepath.ListSeparator) + filepath.Join(dir, "b.yaml")
	got := kubernetes.KubeconfigInUse("")
	if got != want {
		t.Fatalf("KUBECONFIG=%s: %q, want %q", list, got, want)
	}
	if strings.Contains(got, "NEVERprinted") {
		t.Fatal("a kubeconfig's content was read into the record")
	}
	if got := kubernetes.KubeconfigInUse(filepath.Join(dir, "b.yaml")); got != filepath.Join(dir, "b.yaml") {
		t.Errorf("--kubeconfig wins over KUBECONFIG: %q", got)
	}

	// The recorded list reaches either file's context from anywhere, KUBECONFIG unset
	// and no ~/.kube/config.
	t.Setenv("KUBECONFIG", "")
	t.Setenv("HOME", t.TempDir())
	t.Chdir(t.TempDir())
	for _, tc := range []struct{ ctx, ns string }{{"lab", "studio"}, {"prod", "render"}} {
		c, err := kubernetes.New(kubernetes.Target{Kubeconfig: got, Context: tc.ctx})
		if err != nil || c.Context != tc.ctx || c.Namespace != tc.ns {
			t.Fatalf("context %s through the recorded list: %+v %v", tc.ctx, c, err)
		}
	}
	if _, err := kubernetes.New(kubernetes.Target{Context: "lab"}); !errors.Is(err, kubernetes.ErrNoKubeconfig) {
		t.Fatalf("without the record: %v", err)
	}
	// A recorded file that is gone is one line naming it.
	_, err := kubernetes.New(kubernetes.Target{Kubeconfig: filepath.Join(dir, "gone.yaml"), Context: "lab"})
	if err == nil || !strings.Contains(err.Error(), "gone.yaml") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("a recorded kubeconfig that is gone: %v", err)
	}
	t.Logf("gone: %v", err)
}
