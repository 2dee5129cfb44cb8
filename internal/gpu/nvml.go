//go:build nvml && cgo

// NVML through github.com/NVIDIA/go-nvml, which needs cgo: it dlopens libnvidia-ml.so.1 at
// run time (nothing NVIDIA is needed to build; the symbols are left unresolved at link time)
// and calls it through C. Without cgo or without -tags nvml, nvml_stub.go is built instead.
// Build a binary for a GPU machine with
//
//	CGO_ENABLED=1 GOOS=linux GOARCH=amd64 CGO_CFLAGS="-O2 -Wno-deprecated-declarations" \
//	  go build -tags nvml,netgo,osusergo -o dist/scopectl ./cmd/scopectl
//
// (netgo,osusergo keep DNS and user lookups in pure Go, as in CGO_ENABLED=0 builds; the
// CFLAGS only silence go-nvml's deprecation warnings). The binary links only glibc
// (libc.so.6) dynamically: built on Debian 12 it needs glibc ≥ 2.34 where it runs (Ubuntu
// 22.04 and later). A fully static link cannot work: NVML is loaded with dlopen.

package gpu

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVMLCompiled reports whether this binary was built with NVML (-tags nvml, cgo).
const NVMLCompiled = true

// NVML lists GPUs through NVML. LibraryPath, when set, is the libnvidia-ml.so.1 to load;
// otherwise the dynamic linker's search path is tried, then NVMLLibraryPaths. Each call
// initializes NVML and shuts it down again.
type NVML struct {
	LibraryPath string
}

func (NVML) String() string { return "nvml" }

// NVMLLibraryPaths are tried, in order, when libnvidia-ml.so.1 is not on the dynamic
// linker's search path (containers often have it in /usr/local/nvidia/lib64 without
// LD_LIBRARY_PATH naming it). $SCOPECTL_NVML_LIBRARY, when set, is tried first of all.
var NVMLLibraryPaths = []string{
	"/usr/local/nvidia/lib64/libnvidia-ml.so.1",
	"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
	"/usr/lib64/libnvidia-ml.so.1",
	"/usr/lib/aarch64-linux-gnu/libnvidia-ml.so.1",
	"/usr/lib/wsl/lib/libnvidia-ml.so.1",
}

// go-nvml keeps the loaded library's symbols in package variables: one NVML user at a time.
var nvmlMu sync.Mutex

// open loads and initializes NVML; the caller holds nvmlMu and calls lib.Shutdown.
func (n NVML) open() (nvml.Interface, error) {
	var paths []string
	if n.LibraryPath != "" {
		paths = []string{n.LibraryPath}
	} else {
		if p := os.Getenv("SCOPECTL_NVML_LIBRARY"); p != "" {
			paths = append(paths, p)
		}
		paths = append(paths, "libnvidia-ml.so.1")
		paths = append(paths, NVMLLibraryPaths...)
	}
	var tried []string
	for _, p := range paths {
		lib := nvml.New(nvml.WithLibraryPath(p))
		ret := lib.Init()
		if ret == nvml.SUCCESS {
			return lib, nil
		}
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND {
			tried = append(tried, p)
			continue
		}
		// The library is there but will not start (no driver loaded, no permission…).
		return nil, fmt.Errorf("%w: nvmlInit (%s): %s", ErrNoNVML, p, nvml.ErrorString(ret))
	}
	return nil, fmt.Errorf("%w: libnvidia-ml.so.1 not found (tried %s)", ErrNoNVML, strings.Join(tried, ", "))
}

func (n NVML) probe() error {
	nvmlMu.Lock()
	defer nvmlMu.Unlock()
	lib, err := n.open()
	if err != nil {
		return err
	}
	lib.Shutdown()
	return nil
}

// GPUs initializes NVML, reads every GPU and shuts NVML down. Values a GPU does not support
// are left zero; a GPU that fails otherwise (fallen off the bus, …) is an error.
func (n NVML) GPUs(ctx context.Context) ([]GPU, error) {
	nvmlMu.Lock()
	defer nvmlMu.Unlock()
	lib, err := n.open()
	if err != nil {
		return nil, err
	}
	defer lib.Shutdown()

	var hard error
	ok := func(what string, ret nvml.Return) bool {
		switch ret {
		case nvml.SUCCESS:
			return true
		case nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_NO_PERMISSION, nvml.ERROR_NOT_FOUND,
			nvml.ERROR_FUNCTION_NOT_FOUND, nvml.ERROR_INSUFFICIENT_SIZE:
			return false
		}
		if hard == nil {
			hard = fmt.Errorf("nvml: %s: %s", what, nvml.ErrorString(ret))
		}
		return false
	}
	has := func(symbol string) bool { return lib.Extensions().LookupSymbol(symbol) == nil }

	driver, ret := lib.SystemGetDriverVersion()
	if !ok("driver version", ret) {
		driver = ""
	}
	var cuda string
	if v, ret := lib.SystemGetCudaDriverVersion(); ok("CUDA version", ret) && v > 0 {
		cuda = fmt.Sprintf("%d.%d", v/1000, v%1000/10)
	}
	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml: device count: %s", nvml.ErrorString(ret))
	}
	gpus := make([]GPU, 0, count)
	for i := 0; i < count; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		dev, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("nvml: GPU %d: %s", i, nvml.ErrorString(ret))
		}
		g := GPU{Index: i, Driver: driver, CUDA: cuda}
		if s, ret := dev.GetName(); ok("name", ret) {
			g.Name = s
		}
		if s, ret := dev.GetUUID(); ok("uuid", ret) {
			g.UUID = s
		}
		// v2 reports reserved memory apart from used, as nvidia-smi does; v1's used includes it.
		if has("nvmlDeviceGetMemoryInfo_v2") {
			if m, ret := dev.GetMemoryInfo_v2(); ok("memory", ret) {
				g.MemoryUsedMiB, g.MemoryTotalMiB = mib(m.Used), mib(m.Total)
			}
		} else if m, ret := dev.GetMemoryInfo(); ok("memory", ret) {
			g.MemoryUsedMiB, g.MemoryTotalMiB = mib(m.Used), mib(m.Total)
		}
		if u, ret := dev.GetUtilizationRates(); ok("utilization", ret) {
			g.UtilizationPct = int(u.Gpu)
		}
		// nvmlDeviceGetTemperature is deprecated since 13.0 in favour of ...V; use whichever the
		// driver has (calling a symbol it lacks would kill the process, not return an error).
		if has("nvmlDeviceGetTemperatureV") {
			if t, ret := dev.GetTemperatureV().V1(); ok("temperature", ret) {
				g.TemperatureC = int(t.Temperature)
			}
		} else if has("nvmlDeviceGetTemperature") {
			if t, ret := dev.GetTemperature(nvml.TEMPERATURE_GPU); ok("temperature", ret) {
				g.TemperatureC = int(t)
			}
		}
		if mw, ret := dev.GetPowerUsage(); ok("power", ret) {
			g.PowerW = float64(mw) / 1000
		}
		if mw, ret := dev.GetPowerManagementLimit(); ok("power limit", ret) {
			g.PowerLimitW = float64(mw) / 1000
		} else if mw, ret := dev.GetEnforcedPowerLimit(); ok("enforced power limit", ret) {
			g.PowerLimitW = float64(mw) / 1000
		}
		g.Processes = nvmlProcesses(lib, dev, ok)
		if hard != nil {
			return nil, fmt.Errorf("GPU %d: %w", i, hard)
		}
		gpus = append(gpus, g)
	}
	return gpus, nil
}

func nvmlProcesses(lib nvml.Interface, dev nvml.Device, ok func(string, nvml.Return) bool) []Process {
	var ps []Process
	seen := map[uint32]int{}
	add := func(infos []nvml.ProcessInfo) {
		for _, p := range infos {
			var used int64
			if p.UsedGpuMemory != math.MaxUint64 { // NVML_VALUE_NOT_AVAILABLE
				used = mib(p.UsedGpuMemory)
			}
			if i, dup := seen[p.Pid]; dup { // a process both computing and drawing
				ps[i].UsedMiB = max(ps[i].UsedMiB, used)
				continue
			}
			name, ret := lib.SystemGetProcessName(int(p.Pid))
			if ret != nvml.SUCCESS { // not visible from this PID namespace, gone, …
				name = ""
			}
			seen[p.Pid] = len(ps)
			ps = append(ps, Process{PID: int(p.Pid), Name: name, UsedMiB: used})
		}
	}
	if infos, ret := dev.GetComputeRunningProcesses(); ok("compute processes", ret) {
		add(infos)
	}
	if infos, ret := dev.GetGraphicsRunningProcesses(); ok("graphics processes", ret) {
		add(infos)
	}
	return ps
}
