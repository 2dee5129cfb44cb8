package cli_test

import (
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/hub/civitai/civitaitest"
)

// TestHubCivitAI runs the real binary against the fake CivitAI, trusting its TLS
// certificate through SSL_CERT_FILE as any Go program on Linux does.
func TestHubCivitAI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	e := newEnv(t)
	bin := buildBinary(t)
	srv := civitaitest.Catalog(t)
	ca := filepath.Join(e.root, "ca.pem")
	var pemData []byte
	for _, c := range [][]byte{srv.API.Certificate().Raw, srv.CDN.Certificate().Raw} {
		pemData = append(pemData, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
	}
	os.WriteFile(ca, pemData, 0o644)
	key := "0123456789abcdef0123456789abcdef"
	run := func(args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+ca, "CIVITAI_API_URL="+srv.URL(), "CIVITAI_API_KEY="+key)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if strings.Contains(string(out), key) {
			t.Fatalf("key printed: %s", out)
		}
		return string(out), code
	}
	out, code := run("hub", "pull", "civitai:"+strconv.Itoa(civitaitest.VersionT2V14B), "--json")
	if code != 0 || !strings.Contains(out, `"kind": "civitai"`) || !strings.Contains(out, `"base": "wan2.1-t2v-14b"`) ||
		!strings.Contains(out, `"base_model": "Wan Video 14B t2v"`) || !strings.Contains(out, `"trigger_words": "wanstyle"`) {
		t.Fatalf("%d %s", code, out)
	}
	out, code = run("lora", "ls")
	if code != 0 || !strings.Contains(out, "wan2.1-t2v-14b") {
		t.Fatalf("%d %s", code, out)
	}
	out, code = run("hub", "search", "civitai", "anime", "--base", "wan2.1-t2v-1.3b", "--json")
	if code != 0 || !strings.Contains(out, "Small Anime") || strings.Contains(out, "SDXL") {
		t.Fatalf("search: %d %s", code, out)
	}
	if out, code = run("hub", "pull", "civitai:"+strconv.Itoa(civitaitest.VersionPickle)); code == 0 || !strings.Contains(strings.ToLower(out), "pickle") {
		t.Fatalf("pickle: %d %s", code, out)
	}
}
