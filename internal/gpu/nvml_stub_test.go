//go:build !(nvml && cgo)

package gpu

import (
	"context"
	"errors"
	"testing"
)

func TestNVMLNotCompiled(t *testing.T) {
	if NVMLCompiled {
		t.Fatal("NVMLCompiled in a build without NVML")
	}
	_, err := NVML{}.GPUs(context.Background())
	if !errors.Is(err, ErrNoNVML) {
		t.Fatalf("err = %v, want ErrNoNVML", err)
	}
}
