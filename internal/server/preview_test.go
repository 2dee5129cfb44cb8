package server_test

import (
	"context"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/train"
	"github.com/daydreamlive/scopectl/internal/train/traintest"
)

// POST /api/v1/jobs/{id}/preview: the job's newest checkpoint in the library goes into
// a running Scope's LoRA folder (as lora install writes it) and its pipeline is loaded
// with it beside the LoRA it had; bad requests are named.
func TestAPIJobPreview(t *testing.T) {
	h := newHarness(t, false)
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "slime-v2_000000750.safetensors")
	if err := loratest.Write(src, loratest.Spec{Base: lora.BaseT2V1_3B, Rank: 4, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	add, err := h.lib.Add(ctx, src, library.AddOptions{Name: "slime-v2_000000750"})
	if err != nil {
		t.Fatal(err)
	}
	ts := h.lib.Store.(store.TrainStore)
	if err := ts.PutTrainCheckpoint(ctx, store.TrainCheckpoint{JobID: h.jobID, File: "slime-v2_000000750.safetensors", Step: 750,
		SHA256: add.LoRA.SHA256, Size: add.LoRA.Size, CollectedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	loraDir := t.TempDir()
	other := filepath.Join(loraDir, "style.safetensors")
	os.WriteFile(other, []byte("x"), 0o644)
	url := traintest.StartScope(t, loraDir, "--load-delay", "50ms")
	sc := &scope.Client{Base: url}
	if err := sc.LoadPipeline(ctx, "longlive", []scope.LoRALoad{{Path: other, Scale: 0.5}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.WaitLoaded(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}

	p := "/api/v1/jobs/" + h.jobID + "/preview"
	for _, c := range []struct {
		path, body string
		hdr        map[string]string
		code       int
		msg        string
	}{
		{p, `{"target":"` + loraDir + `"}`, nil, http.StatusUnauthorized, ""},
		{p, `{}`, auth(), http.StatusBadRequest, "target: give pod:ID"},
		{p, `{"target":"models/lora"}`, auth(), http.StatusBadRequest, "must be an absolute path"},
		{p, `{"target":"` + loraDir + `","step":500}`, auth(), http.StatusNotFound, "no checkpoint of step 500 in the library"},
		{p, `{"target":"pod:nosuchpod"}`, auth(), http.StatusNotFound, `pod \"nosuchpod\" not found`},
		{"/api/v1/jobs/nojob/preview", `{"target":"` + loraDir + `"}`, auth(), http.StatusNotFound, `job \"nojob\" not found`},
		{p, `{"target":"` + loraDir + `","bogus":1}`, auth(), http.StatusBadRequest, "bad JSON body"},
	} {
		code, body, _ := h.do("POST", c.path, c.body, c.hdr)
		if code != c.code || !strings.Contains(body, c.msg) {
			t.Errorf("POST %s %s: %d %s; want %d %q", c.path, c.body, code, body, c.code, c.msg)
		}
	}

	code, body, _ := h.do("POST", p, `{"target":"`+loraDir+`","scope_url":"`+url+`"}`, auth())
	if code != http.StatusOK {
		t.Fatalf("preview: %d %s", code, body)
	}
	var res train.PreviewResult
	decodeJSON(t, body, &res)
	if res.Step != 750 || res.Name != "slime-v2_000000750" || res.Pipeline != "longlive" || res.Kept != 1 || path.Dir(res.Path) != loraDir {
		t.Fatalf("preview: %+v", res)
	}
	st, err := sc.WaitLoaded(ctx, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.LoadedLoRAs) != 2 || st.LoadedLoRAs[0].Path != res.Path || st.LoadedLoRAs[1].Path != other {
		t.Fatalf("Scope runs %s with %+v; want %s and %s", st.PipelineID, st.LoadedLoRAs, res.Path, other)
	}
	if _, err := os.Stat(res.Path); err != nil {
		t.Fatal(err)
	}
	man, err := os.ReadFile(filepath.Join(loraDir, "lora_manifest.json"))
	if err != nil || !strings.Contains(string(man), path.Base(res.Path)) {
		t.Errorf("manifest lacks %s: %v\n%s", res.Path, err, man)
	}
}
