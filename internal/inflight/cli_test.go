package inflight_test

import (
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/inflight"
	"github.com/daydreamlive/scopectl/internal/testkit"
)

// The real command line publishes: `scopectl pull` of a file over a real sshd shows in
// the data dir's registry (op pull, the process's pid, bytes moving) while it runs, and
// the entry is gone when it ends. (The random bytes are no LoRA: the library refuses
// them after the transfer, which is not what this test is about.)
func TestCLIPullPublishes(t *testing.T) {
	bin := testkit.Scopectl(t)
	root := t.TempDir()
	home := filepath.Join(root, "home")
	port := testkit.StartSSHD(t, home, "")
	src := filepath.Join(root, "remote")
	os.MkdirAll(src, 0o755)
	f, err := os.Create(filepath.Join(src, "big.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, 256<<20); err != nil { // incompressible: no shortcut
		t.Fatal(err)
	}
	f.Close()
	data := filepath.Join(root, "data")
	cmd := exec.Command(bin, "pull", fmt.Sprintf("ssh://%s@127.0.0.1:%d%s/big.safetensors", testkit.User(), port, src))
	cmd.Env = append(os.Environ(), "HOME="+home, "SSH_AUTH_SOCK=", "SCOPECTL_DATA_DIR="+data, "XDG_CONFIG_HOME="+filepath.Join(root, "config"),
		"SCOPECTL_CONFIG=", "HF_TOKEN=", "RUNPOD_API_KEY=")
	testkit.KillWithParent(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	d := inflight.Folder(data)
	var seen []inflight.Entry
	deadline := time.After(2 * time.Minute)
wait:
	for {
		select {
		case <-exited:
			break wait
		case <-deadline:
			cmd.Process.Kill()
			t.Fatal("scopectl pull did not end")
		case <-time.After(5 * time.Millisecond):
		}
		if es, _ := d.List(); len(es) > 0 {
			seen = append(seen, es...)
		}
	}
	if len(seen) == 0 {
		t.Fatal("the pull never showed in the registry")
	}
	e := seen[len(seen)-1]
	if e.Op != "pull" || e.Item != "big.safetensors" || e.PID != cmd.Process.Pid || e.Total != 256<<20 {
		t.Errorf("entry: %+v", e)
	}
	if es, _ := d.List(); len(es) != 0 {
		t.Errorf("after the pull: %+v", es)
	}
}
