package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A failed pull leaves no empty temporary file in the library's incoming folder.
func TestFailedPullLeavesNoTempFile(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(e.root, "pod")
	os.MkdirAll(src, 0o755)
	if _, errs, code := e.run("pull", "file://"+filepath.Join(src, "missing.safetensors")); code == 0 {
		t.Fatalf("pull of a missing file succeeded: %s", errs)
	}
	ents, _ := os.ReadDir(filepath.Join(e.dataDir, "incoming"))
	for _, d := range ents {
		if strings.Contains(d.Name(), ".scopectl-tmp-") {
			t.Errorf("left %s in incoming", d.Name())
		}
	}
}
