package trainpreview

import (
	"context"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/aitk/aitktest"
	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod"
	"github.com/daydreamlive/scopectl/internal/provider/runpod/runpodtest"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/testkit"
	. "github.com/daydreamlive/scopectl/internal/train/traintest"
)

const rpKey = "rpa_" + "TRAINPREVIEWKEYTRAINPREVIEWKEY000001"

// --preview POD_ID: the pod is a Scope deploy on the fake RunPod, whose port 22 is
// the test sshd and whose HTTP port 8000 (through the fake's proxy) is the Scope
// stand-in. Its LoRA folder is the one its environment names (as deploy records
// DAYDREAM_SCOPE_LORA_DIR), here under the test's own folder rather than /workspace.
func TestTrainRunPreviewPod(t *testing.T) {
	testkit.NeedRoot(t, "a RunPod pod's SSH login (root)")
	w := NewWorld(t, aitktest.Config{Name: "podprev", Steps: 20, SaveEvery: 10, Keep: 2})
	sshPort, _ := strconv.Atoi(w.Host[strings.LastIndexByte(w.Host, ':')+1:])
	loraDir := filepath.Join(t.TempDir(), "models", "lora")
	os.MkdirAll(loraDir, 0o755)
	scopeURL := StartScope(t, loraDir, "--load-delay", "100ms")
	sc := &scope.Client{Base: scopeURL}
	ctx := context.Background()
	if err := sc.LoadPipeline(ctx, "longlive", nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.WaitLoaded(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}

	rt := func(runpodtest.PodView) (*runpodtest.Container, error) {
		return &runpodtest.Container{PublicIP: "127.0.0.1", TCP: map[int]int{22: sshPort},
			HTTP: map[int]string{deploy.ContainerPort: scopeURL}}, nil
	}
	srv := runpodtest.New(t, runpodtest.Options{APIKey: rpKey, BootDelay: 20 * time.Millisecond, Runtime: rt})
	rp, err := runpod.New(runpod.Options{APIKey: secret.New(rpKey), APIURL: srv.RESTURL(), GraphQLURL: srv.GraphQLURL(), ProxyURL: srv.ProxyURL()})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := rp.Create(ctx, provider.CreateSpec{Name: "scope", GPUType: "NVIDIA GeForce RTX 4090", Image: "daydreamlive/scope:main",
		Ports: deploy.PodPorts, Env: map[string]string{"DAYDREAM_SCOPE_LORA_DIR": loraDir}, RequestID: provider.NewRequestID()})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; pod.Status != provider.StatusRunning; i++ {
		if i == 200 {
			t.Fatalf("pod %s: %s, not running", pod.ID, pod.Status)
		}
		time.Sleep(25 * time.Millisecond)
		if pod, err = rp.Get(ctx, pod.ID); err != nil {
			t.Fatal(err)
		}
	}
	w.Env = append(w.Env, "RUNPOD_API_URL="+srv.RESTURL(), "RUNPOD_GRAPHQL_URL="+srv.GraphQLURL(),
		"SCOPECTL_RUNPOD_PROXY_URL="+srv.ProxyURL(), "RUNPOD_API_KEY="+rpKey)

	// Trained on the SSH host, previewed on the pod: the lines a user reads (no --json).
	args := []string{"train", "run", w.Config, "--host", w.Host, "--aitk-dir", w.Checkout, "--workspace", w.WS, "--force",
		"--compress", "off", "--poll", "100ms", "--interval", "300ms", "--env", aitktest.EnvStepMS + "=100", "--preview", pod.ID,
		"--env", "HF_ENDPOINT=" + w.Hub.URL()}
	_, stderr, code := w.ScopectlCode(args...)
	if code != 0 {
		t.Fatalf("train run: exit %d\n%s", code, stderr)
	}
	var lines []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, "preview") {
			lines = append(lines, l)
		}
	}
	t.Logf("preview lines:\n%s", strings.Join(lines, "\n"))
	want := "installed on ssh://root@127.0.0.1:" + strconv.Itoa(sshPort) + loraDir + "; loading longlive with it"
	// Each checkpoint as it came (step 10, unless one look found both), then the
	// final LoRA, named as the job.
	if n := len(lines); n == 0 || n > 2 || lines[n-1] != "preview: step 20 (podprev) "+want || n == 2 && lines[0] != "preview: step 10 (podprev_000000010) "+want {
		t.Fatalf("want the lines 'preview: step 10 (podprev_000000010) %s' and step 20 (podprev):\n%s", want, stderr)
	}
	st, err := sc.WaitLoaded(ctx, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.PipelineID != "longlive" || len(st.LoadedLoRAs) != 1 || path.Dir(st.LoadedLoRAs[0].Path) != loraDir ||
		!strings.HasPrefix(path.Base(st.LoadedLoRAs[0].Path), "podprev.") {
		t.Fatalf("Scope runs %s with %+v; want longlive with step 20 from %s", st.PipelineID, st.LoadedLoRAs, loraDir)
	}
	if _, err := os.Stat(st.LoadedLoRAs[0].Path); err != nil {
		t.Fatal(err)
	}
	man, err := os.ReadFile(filepath.Join(loraDir, "lora_manifest.json"))
	if err != nil || !strings.Contains(string(man), path.Base(st.LoadedLoRAs[0].Path)) {
		t.Errorf("manifest lacks %s: %v\n%s", st.LoadedLoRAs[0].Path, err, man)
	}
	// The pod's host key was trusted on first use, for this pod only.
	if _, err := os.Stat(filepath.Join(w.Data, "known_hosts.d", pod.ID)); err != nil {
		t.Errorf("pod host key: %v", err)
	}
	// Nothing went to the real /workspace.
	if _, err := os.Stat(filepath.Join(deploy.DefaultLoRADir, path.Base(st.LoadedLoRAs[0].Path))); err == nil {
		t.Errorf("the checkpoint went to %s", deploy.DefaultLoRADir)
	}
}
