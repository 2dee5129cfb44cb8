package cli_test

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
)

// TestStatusAgainstScopeStub runs the Scope stand-in binary and reads it with
// `scopectl status` and `scopectl logs`.
func TestStatusAgainstScopeStub(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	e := newEnv(t)
	stub := filepath.Join(e.root, "scopestub")
	build := exec.Command("go", "build", "-o", stub, "./internal/scope/scopestub")
	build.Dir = moduleRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	p := e.lora("a.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B})
	e.mustRun("lora", "add", p)
	e.mustRun("lora", "install", "a")
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(stub, "--host", "127.0.0.1", "--port", itoa(port))
	cmd.Env = append(os.Environ(), "DAYDREAM_SCOPE_LORA_DIR="+e.scopeDir)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	go bufio.NewReader(stderr).WriteTo(discard{})
	url := "http://127.0.0.1:" + itoa(port)
	var out string
	for i := 0; ; i++ {
		o, _, code := e.run("status", "--scope", url, "--json")
		if code == 0 {
			out = o
			break
		}
		if i > 100 {
			t.Fatal("stub never became healthy")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(out, "a.safetensors") || !strings.Contains(out, `"in_library": true`) {
		t.Fatalf("status: %s", out)
	}
	if _, errs, code := e.run("logs", "--scope", url, "-n", "5000"); code != 2 {
		t.Fatalf("logs -n 5000: %d %s", code, errs)
	}
	e.mustRun("logs", "--scope", url, "-n", "10")
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func itoa(n int) string { return strconv.Itoa(n) }
