package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/store"
)

// status POD shows the pod's limits and the guard's last stop, as pod get does, in
// text and in --json.
func TestStatusPodLastStop(t *testing.T) {
	ended := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	v := &statusView{Target: "pod p1", Pod: &podStatusView{ID: "p1", Name: "scope", Status: provider.StatusExited, GPUType: "NVIDIA RTX A6000", GPUCount: 1,
		Limits:   &provider.Limits{IdleStop: 10 * time.Minute, FromPod: true},
		LastStop: &store.Run{PodID: "p1", EndedAt: &ended, EndSource: "guard", EndReason: "idle 10m0s (idle-stop 10m0s)"}}}
	var b bytes.Buffer
	printStatus(&b, v)
	for _, want := range []string{"limits:", "idle 10m", "last stop:", "by guard: idle 10m0s (idle-stop 10m0s)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, b.String())
		}
	}
	js, _ := json.Marshal(v)
	if !strings.Contains(string(js), `"last_stop":{`) || !strings.Contains(string(js), `"end_source":"guard"`) {
		t.Errorf("status --json: %s", js)
	}
}
