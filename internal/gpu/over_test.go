package gpu

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// shRunner runs scripts with sh -c and a given PATH.
type shRunner struct{ path string }

func (r shRunner) Run(ctx context.Context, script string) (string, int, error) {
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	cmd.Env = []string{"PATH=" + r.path}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode(), nil
	}
	return string(out), 0, err
}

// Over runs exactly QueryCommand and parses real recorded output; a host without
// nvidia-smi is ErrNoSMI.
func TestOver(t *testing.T) {
	dir := t.TempDir()
	rec, err := filepath.Abs("testdata/h100-busy-query-noheader-nounits.csv")
	if err != nil {
		t.Fatal(err)
	}
	sh, _ := exec.LookPath("sh")
	cat, _ := exec.LookPath("cat")
	script := "#!" + sh + "\n[ \"$*\" = '" + strings.Join(QueryArgs(), " ") + "' ] || { echo \"unexpected arguments: $*\"; exit 2; }\nexec " + cat + " " + rec + "\n"
	if err := os.WriteFile(filepath.Join(dir, "nvidia-smi"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	gpus, err := Over(shRunner{dir}, "test").GPUs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(gpus) != 1 || gpus[0].Name != "NVIDIA H100 80GB HBM3" || gpus[0].MemoryUsedMiB != 21491 || gpus[0].MemoryTotalMiB != 81559 || gpus[0].UtilizationPct != 100 || gpus[0].TemperatureC != 67 {
		t.Fatalf("%+v", gpus)
	}
	_, err = Over(shRunner{t.TempDir()}, "bare-host").GPUs(context.Background())
	if !errors.Is(err, ErrNoSMI) || !strings.Contains(err.Error(), "bare-host") {
		t.Fatalf("no nvidia-smi: %v", err)
	}
}
