// Package traindocker runs `scopectl train run --image` end to end: ai-toolkit (the
// stand-in) as a docker image pulled from a local registry, on a machine over SSH.
package traindocker

import (
	"encoding/json"
	"testing"

	"github.com/daydreamlive/scopectl/internal/aitk/aitktest"
	"github.com/daydreamlive/scopectl/internal/deploy/deploytest"
	"github.com/daydreamlive/scopectl/internal/testkit"
	"github.com/daydreamlive/scopectl/internal/train"
	. "github.com/daydreamlive/scopectl/internal/train/traintest"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// The same over SSH with ai-toolkit as a docker image (--image), pulled from a registry.
func TestTrainRunDockerImage(t *testing.T) {
	t.Parallel()
	deploytest.RequireDocker(t)
	reg := deploytest.StartRegistry(t)
	ref := aitktest.Image(t, reg)
	w := NewWorld(t, aitktest.Config{Name: "dockerlora", Steps: 30, SaveEvery: 10, Keep: 2, SampleEvery: 10})
	args := []string{"train", "run", w.Config, "--host", w.Host, "--image", ref, "--docker-gpus", "-", "--workspace", w.WS,
		"--force", "--compress", "off", "--poll", "100ms", "--interval", "300ms", "--json", "--env", aitktest.EnvStepMS + "=50",
		"--no-prepull"} // the container cannot reach the fake Hub on the test's loopback
	var res train.CollectResult
	out := w.Scopectl(args...)
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if res.State == nil && res.Phase != train.PhaseDone {
		t.Fatalf("phase %s: %s", res.Phase, out)
	}
	if res.Phase != train.PhaseDone {
		t.Fatalf("phase %s", res.Phase)
	}
	CheckLibrary(t, w, res.JobID, 3)
}
