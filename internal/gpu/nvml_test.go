//go:build nvml && cgo

package gpu

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os/exec"
	"testing"
)

func TestNVMLMissingLibrary(t *testing.T) {
	_, err := NVML{LibraryPath: "/nonexistent/libnvidia-ml.so.1"}.GPUs(context.Background())
	if !errors.Is(err, ErrNoNVML) {
		t.Fatalf("err = %v, want ErrNoNVML", err)
	}
	t.Log(err)
}

// TestNVMLLive runs where a GPU is (the device machine) and compares NVML with nvidia-smi.
func TestNVMLLive(t *testing.T) {
	ctx := context.Background()
	nv, err := NVML{}.GPUs(ctx)
	if errors.Is(err, ErrNoNVML) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(nv) == 0 {
		t.Fatal("NVML works but lists no GPU")
	}
	if s := Local(ctx); s.(interface{ String() string }).String() != "nvml" {
		t.Errorf("Local() = %v, want nvml", s)
	}
	for _, g := range nv {
		t.Logf("%+v", g)
		if g.UUID == "" || g.Name == "" || g.MemoryTotalMiB <= 0 || g.Driver == "" || g.CUDA == "" || g.PowerLimitW <= 0 {
			t.Errorf("GPU %d: missing values: %+v", g.Index, g)
		}
	}
	if _, err := exec.LookPath("nvidia-smi"); err != nil {
		t.Skip("no nvidia-smi to compare with")
	}
	out, err := ExecNvidiaSMI(ctx, QueryArgs())
	if err != nil {
		t.Fatal(err)
	}
	smi, err := ParseQueryCSV(bytes.NewReader(out), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(smi) != len(nv) {
		t.Fatalf("nvidia-smi lists %d GPUs, NVML %d", len(smi), len(nv))
	}
	for i := range nv {
		a, b := nv[i], smi[i]
		if a.Index != b.Index || a.UUID != b.UUID || a.Name != b.Name || a.Driver != b.Driver ||
			a.MemoryTotalMiB != b.MemoryTotalMiB || a.PowerLimitW != b.PowerLimitW {
			t.Errorf("GPU %d: NVML %+v\nnvidia-smi %+v", i, a, b)
		}
		// Sampled at different moments: allow some drift.
		if d := a.MemoryUsedMiB - b.MemoryUsedMiB; d < -1024 || d > 1024 {
			t.Errorf("GPU %d memory used: NVML %d, nvidia-smi %d", i, a.MemoryUsedMiB, b.MemoryUsedMiB)
		}
		if d := a.TemperatureC - b.TemperatureC; d < -5 || d > 5 {
			t.Errorf("GPU %d temperature: NVML %d, nvidia-smi %d", i, a.TemperatureC, b.TemperatureC)
		}
		if math.Abs(a.PowerW-b.PowerW) > 0.5*a.PowerLimitW {
			t.Errorf("GPU %d power: NVML %v, nvidia-smi %v", i, a.PowerW, b.PowerW)
		}
	}
}
