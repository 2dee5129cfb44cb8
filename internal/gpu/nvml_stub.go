//go:build !(nvml && cgo)

package gpu

import (
	"context"
	"fmt"
)

// NVMLCompiled reports whether this binary was built with NVML (-tags nvml, cgo).
const NVMLCompiled = false

// NVML lists GPUs through NVML. This binary was built without it (NVML needs cgo and
// -tags nvml, see nvml.go), so GPUs always returns ErrNoNVML.
type NVML struct {
	LibraryPath string
}

// NVMLLibraryPaths are where NVML builds look for libnvidia-ml.so.1 (unused here).
var NVMLLibraryPaths []string

func (NVML) String() string { return "nvml" }

var errNotCompiled = fmt.Errorf("%w: scopectl was built without NVML (build with CGO_ENABLED=1 go build -tags nvml)", ErrNoNVML)

func (NVML) probe() error { return errNotCompiled }

// GPUs returns ErrNoNVML.
func (NVML) GPUs(context.Context) ([]GPU, error) { return nil, errNotCompiled }
