package inflight_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/inflight"
	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// A tracker of a Reporter with Publish shows its transfer to another reader while bytes
// move, with its progress, and takes it away at Finish; ops that move no bytes are not
// published.
func TestPublishThroughProgress(t *testing.T) {
	old := inflight.Every
	inflight.Every = 0
	t.Cleanup(func() { inflight.Every = old })
	d := inflight.Folder(t.TempDir())
	var bar bytes.Buffer
	r := progress.Reporter{Mode: progress.JSON, W: &bar, Publish: d.Publish}
	tr := r.Start("send", "/home/me/loras/slime.safetensors", 1000)
	h := r.Start("hash", "slime.safetensors", 1000)
	tr.Write(make([]byte, 400))
	h.Write(make([]byte, 10))
	es, err := d.List()
	if err != nil || len(es) != 1 {
		t.Fatalf("list: %+v %v", es, err)
	}
	e := es[0]
	if e.Op != "send" || e.Item != "slime.safetensors" || e.Done != 400 || e.Total != 1000 || e.PID != os.Getpid() || e.StartedAt.IsZero() {
		t.Errorf("entry: %+v", e)
	}
	tr.Finish()
	h.Finish()
	if es, _ := d.List(); len(es) != 0 {
		t.Errorf("after Finish: %+v", es)
	}
	if !strings.Contains(bar.String(), `"event":"done"`) {
		t.Errorf("the reporter's own output: %q", bar.String())
	}
	// A reporter with nowhere to publish, and an unset registry, do nothing.
	progress.Reporter{}.Start("send", "x", 1).Finish()
	inflight.Dir("").Publish("send", "x", 1)(1, true)
}

// Writes are throttled: a burst of Adds rewrites the file at most once per Every.
func TestThrottled(t *testing.T) {
	old := inflight.Every
	inflight.Every = time.Hour
	t.Cleanup(func() { inflight.Every = old })
	d := inflight.Folder(t.TempDir())
	rep := d.Publish("pull", "a.safetensors", 100)
	for i := int64(1); i <= 100; i++ {
		rep(i, false)
	}
	es, _ := d.List()
	if len(es) != 1 || es[0].Done != 0 {
		t.Errorf("throttled entry: %+v", es)
	}
	rep(100, true)
	rep(100, false) // after the end: nothing comes back
	if es, _ := d.List(); len(es) != 0 {
		t.Errorf("ended: %+v", es)
	}
}

// An entry whose process is gone is stale: List drops it and removes its file; a file
// that is not an entry is skipped (and removed once it is old); other files stay.
func TestStale(t *testing.T) {
	dir := t.TempDir()
	d := inflight.Dir(dir)
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	dead := inflight.Entry{ID: "dead", Op: "send", Item: "x", PID: cmd.Process.Pid, Host: host, StartedAt: time.Now()}
	other := inflight.Entry{ID: "elsewhere", Op: "pull", Item: "y", PID: cmd.Process.Pid, Host: host + "-other", StartedAt: time.Now()}
	live := inflight.Entry{ID: "live", Op: "collect", Item: "z", PID: os.Getpid(), Host: host, Done: 5, Total: 9, StartedAt: time.Now().Add(-time.Minute)}
	for _, e := range []inflight.Entry{dead, other, live} {
		b, _ := json.Marshal(e)
		os.WriteFile(filepath.Join(dir, e.ID+".json"), b, 0o600)
	}
	os.WriteFile(filepath.Join(dir, "junk.json"), []byte("{not json"), 0o600)
	os.WriteFile(filepath.Join(dir, "old-junk.json"), []byte(`{"id":"x"}`), 0o600)
	past := time.Now().Add(-time.Hour)
	os.Chtimes(filepath.Join(dir, "old-junk.json"), past, past)
	os.WriteFile(filepath.Join(dir, "README"), []byte("not ours"), 0o600)
	es, err := d.List()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range es {
		ids = append(ids, e.ID)
	}
	if strings.Join(ids, ",") != "live,elsewhere" {
		t.Errorf("live entries: %v", ids)
	}
	for name, want := range map[string]bool{"dead.json": false, "old-junk.json": false, "junk.json": true, "README": true, "live.json": true, "elsewhere.json": true} {
		if _, err := os.Stat(filepath.Join(dir, name)); (err == nil) != want {
			t.Errorf("%s present: %v, want %v", name, err == nil, want)
		}
	}
	if es, err := inflight.Dir(filepath.Join(dir, "none")).List(); err != nil || es != nil {
		t.Errorf("missing folder: %v %v", es, err)
	}
}

// A registry file written by a scopectl process that another process reads: this test
// binary writes from a child process and reads while the child still runs.
func TestOtherProcess(t *testing.T) {
	if os.Getenv("INFLIGHT_CHILD") != "" {
		d := inflight.Dir(os.Getenv("INFLIGHT_CHILD"))
		rep := d.Publish("download", "model.safetensors", 1<<20)
		rep(1<<19, false)
		os.Stdout.WriteString("started\n")
		time.Sleep(30 * time.Second) // killed by the parent
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestOtherProcess$")
	cmd.Env = append(os.Environ(), "INFLIGHT_CHILD="+dir)
	out, _ := cmd.StdoutPipe()
	testkit.KillWithParent(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	out.Read(buf)
	es, _ := inflight.Dir(dir).List()
	if len(es) != 1 || es[0].PID != cmd.Process.Pid || es[0].Op != "download" {
		t.Errorf("the child's transfer: %+v", es)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if es, _ := inflight.Dir(dir).List(); len(es) != 0 {
		t.Errorf("after the child died: %+v", es)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"id":"a","op":"send","item":"x","pid":1,"done_bytes":1,"total_bytes":2}`))
	f.Add([]byte(`{"id":"../x","op":"send","pid":1}`))
	f.Add([]byte(`{"id":"a","op":"send","pid":-1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := inflight.Parse(b)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n") {
				t.Errorf("a multi-line error: %q", err)
			}
			return
		}
		if e.ID == "" || strings.ContainsAny(e.ID, `/\`) || e.PID <= 0 || e.Done < 0 || e.Total < 0 {
			t.Errorf("accepted %+v", e)
		}
	})
}
