package deploy

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestGuardJSON: deploy --json's "guard" keeps the names (and the always-present pid
// and already_running) it had as a map, which scripts read.
func TestGuardJSON(t *testing.T) {
	for _, g := range []GuardInfo{
		{Pod: "p1", Limits: "idle-stop 30m0s, max-hours 4", Log: "/workspace/.scopectl/guard.log", PID: 4242},
		{Pod: "p2", Already: true},
	} {
		b, err := json.Marshal(DeployResult{Guard: &g})
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Guard map[string]any `json:"guard"`
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"pod": g.Pod, "limits": g.Limits, "log": g.Log, "pid": float64(g.PID), "already_running": g.Already}
		if !reflect.DeepEqual(got.Guard, want) {
			t.Errorf("guard JSON %s, want the fields %v", b, want)
		}
	}
	if b, _ := json.Marshal(DeployResult{}); string(b) != `{"dry_run":false,"steps":null}` {
		t.Errorf("no guard: %s", b)
	}
}
