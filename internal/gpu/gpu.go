// Package gpu reads NVIDIA GPU metrics (memory, utilization, temperature, power, and the
// processes using each GPU) from two sources behind one type: NVML, the library nvidia-smi
// itself is built on, and nvidia-smi's output, run locally or over SSH.
//
// NVML needs cgo (github.com/NVIDIA/go-nvml loads libnvidia-ml.so.1 with dlopen), so it is
// compiled in only with `-tags nvml` and CGO_ENABLED=1; otherwise NVML.GPUs returns
// ErrNoNVML and Local falls back to nvidia-smi. See nvml.go for the build command.
//
// A value a GPU does not report ("[N/A]", "[Not Supported]", an NVML call that is not
// supported) is left zero.
package gpu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"strings"
)

// GPU is one physical GPU as NVML or nvidia-smi reports it. Index is nvidia-smi's index
// (NVML's enumeration order), which can differ from the /dev/nvidiaN minor number.
type GPU struct {
	Index          int       `json:"index"`
	UUID           string    `json:"uuid"`
	Name           string    `json:"name"`
	MemoryUsedMiB  int64     `json:"memory_used_mib"`
	MemoryTotalMiB int64     `json:"memory_total_mib"`
	UtilizationPct int       `json:"utilization_pct"`
	TemperatureC   int       `json:"temperature_c"`
	PowerW         float64   `json:"power_w"`
	PowerLimitW    float64   `json:"power_limit_w"`
	Driver         string    `json:"driver_version"`
	CUDA           string    `json:"cuda_version,omitempty"`
	Processes      []Process `json:"processes,omitempty"`
}

// Process is a process holding memory on a GPU. Name is empty where it cannot be read
// (a process in another PID namespace, as in most containers).
type Process struct {
	PID     int    `json:"pid"`
	Name    string `json:"name"`
	UsedMiB int64  `json:"used_mib"`
}

// Source is anything that can list the GPUs of one machine.
type Source interface {
	GPUs(ctx context.Context) ([]GPU, error)
}

var (
	// ErrNoNVML means NVML cannot be used: this binary was built without it, or
	// libnvidia-ml.so.1 is not installed, or it could not be initialized (no driver).
	ErrNoNVML = errors.New("NVML not available")
	// ErrNoGPU means neither NVML nor nvidia-smi is available on this machine.
	ErrNoGPU = errors.New("no NVIDIA GPU found (neither NVML nor nvidia-smi is available)")
)

// queryFields are the --query-gpu fields of QueryArgs, in order; ParseQueryCSV expects
// this order when the output has no header.
var queryFields = []string{
	"index", "uuid", "name", "memory.used", "memory.total", "utilization.gpu",
	"temperature.gpu", "power.draw", "power.limit", "driver_version",
}

// QueryArgs are the exact nvidia-smi arguments scopectl runs, locally or over SSH; their
// output is what ParseQueryCSV(r, false) reads.
func QueryArgs() []string {
	return []string{
		"--query-gpu=" + strings.Join(queryFields, ","),
		"--format=csv,noheader,nounits",
	}
}

// QueryCommand is QueryArgs as one POSIX sh command line, for runners that take a script
// (remote.Runner): `nvidia-smi --query-gpu=… --format=csv,noheader,nounits`. The arguments
// need no quoting.
func QueryCommand() string { return "nvidia-smi " + strings.Join(QueryArgs(), " ") }

// SMI lists GPUs by running `nvidia-smi` with QueryArgs. Run runs nvidia-smi with the given
// arguments and returns its standard output: over SSH, the caller supplies it; nil runs
// nvidia-smi from PATH (ExecNvidiaSMI). Processes are not filled in.
type SMI struct {
	Run func(ctx context.Context, args []string) ([]byte, error)
}

func (s SMI) String() string { return "nvidia-smi" }

// GPUs runs nvidia-smi and parses its output. A machine where nvidia-smi says "No devices
// were found" has no GPUs: an empty list, no error.
func (s SMI) GPUs(ctx context.Context) ([]GPU, error) {
	run := s.Run
	if run == nil {
		run = ExecNvidiaSMI
	}
	out, err := run(ctx, QueryArgs())
	if err != nil {
		if bytes.Contains(out, []byte("No devices were found")) || strings.Contains(err.Error(), "No devices were found") {
			return []GPU{}, nil
		}
		return nil, err
	}
	gpus, err := ParseQueryCSV(bytes.NewReader(out), false)
	if err != nil {
		return nil, fmt.Errorf("nvidia-smi output: %w", err)
	}
	return gpus, nil
}

// ExecNvidiaSMI runs nvidia-smi from PATH and returns its standard output. When it fails,
// the error carries what it printed (nvidia-smi prints its errors on stdout).
func ExecNvidiaSMI(ctx context.Context, args []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "nvidia-smi", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(string(out))
		}
		if len(msg) > 500 {
			msg = msg[:500] + "…"
		}
		if msg != "" {
			return out, fmt.Errorf("nvidia-smi: %w: %s", err, msg)
		}
		return out, fmt.Errorf("nvidia-smi: %w", err)
	}
	return out, nil
}

// Local returns the best source on this machine: NVML when it initializes, else
// nvidia-smi when it is on PATH, else a source whose GPUs returns ErrNoGPU (wrapping why
// NVML could not be used). The returned sources print as "nvml", "nvidia-smi" or "none".
func Local(ctx context.Context) Source {
	if ctx.Err() != nil {
		return noGPU{reason: ctx.Err()}
	}
	nv := NVML{}
	nvErr := nv.probe()
	if nvErr == nil {
		return nv
	}
	if _, err := exec.LookPath("nvidia-smi"); err == nil {
		return SMI{}
	}
	return noGPU{reason: nvErr}
}

type noGPU struct{ reason error }

func (noGPU) String() string { return "none" }

func (n noGPU) GPUs(context.Context) ([]GPU, error) {
	if n.reason != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoGPU, n.reason)
	}
	return nil, ErrNoGPU
}

// mib rounds bytes up to MiB, as nvidia-smi does (seen on an H100, driver 580: 21010.8 MiB
// used printed as 21011, 60068.2 MiB free as 60069).
func mib(b uint64) int64 {
	if b > math.MaxInt64 {
		return 0
	}
	return int64((b + (1<<20 - 1)) >> 20)
}
