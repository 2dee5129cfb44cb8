// Command gpucheck prints, as one JSON object, the GPUs of this machine as gpu.Local() sees
// them, as NVML sees them, as `nvidia-smi` with gpu.QueryArgs() reports them, and as
// `nvidia-smi -q -x` reports them, with the fields where NVML and nvidia-smi disagree, so
// the two sources can be compared on a real GPU machine. Build it with NVML (see
// internal/gpu/nvml.go):
//
//	CGO_ENABLED=1 GOOS=linux GOARCH=amd64 CGO_CFLAGS="-O2 -Wno-deprecated-declarations" \
//	  go build -tags nvml,netgo,osusergo -o dist/gpucheck ./internal/gpu/gpucheck
//
// and run `gpucheck` (or `gpucheck -n 5 -interval 1s` for several samples) there.
// It exits 1 when no source gave any GPU.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/daydreamlive/scopectl/internal/gpu"
)

type result struct {
	Source string    `json:"source,omitempty"`
	GPUs   []gpu.GPU `json:"gpus"`
	Error  string    `json:"error,omitempty"`
	Millis float64   `json:"ms"`
}

type sample struct {
	Time         time.Time `json:"time"`
	NVMLCompiled bool      `json:"nvml_compiled"`
	Local        result    `json:"local"`
	NVML         result    `json:"nvml"`
	SMIArgs      []string  `json:"nvidia_smi_args"`
	SMIRaw       string    `json:"nvidia_smi_raw,omitempty"`
	SMI          result    `json:"nvidia_smi"`
	XML          *result   `json:"nvidia_smi_xml,omitempty"`
	Differences  []string  `json:"nvml_vs_nvidia_smi"`
}

func main() {
	n := flag.Int("n", 1, "samples to take")
	interval := flag.Duration("interval", time.Second, "time between samples")
	xml := flag.Bool("xml", true, "also run and parse `nvidia-smi -q -x`")
	flag.Parse()
	ctx := context.Background()
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	found := false
	for i := 0; i < *n; i++ {
		if i > 0 {
			time.Sleep(*interval)
		}
		s := take(ctx, *xml)
		if len(s.Local.GPUs)+len(s.NVML.GPUs)+len(s.SMI.GPUs) > 0 {
			found = true
		}
		if err := enc.Encode(s); err != nil {
			fmt.Fprintln(os.Stderr, "gpucheck:", err)
			os.Exit(2)
		}
	}
	if !found {
		os.Exit(1)
	}
}

func take(ctx context.Context, withXML bool) sample {
	s := sample{Time: time.Now().UTC(), NVMLCompiled: gpu.NVMLCompiled, SMIArgs: gpu.QueryArgs()}
	t := time.Now()
	src := gpu.Local(ctx)
	s.Local = run(ctx, src)
	s.Local.Millis = ms(time.Since(t)) // with the probe
	s.Local.Source = fmt.Sprint(src)
	s.NVML = run(ctx, gpu.NVML{})

	t = time.Now()
	raw, err := gpu.ExecNvidiaSMI(ctx, gpu.QueryArgs())
	s.SMIRaw = string(raw)
	if err != nil {
		s.SMI = result{Error: err.Error()}
	} else {
		gs, err := gpu.ParseQueryCSV(bytes.NewReader(raw), false)
		s.SMI = result{GPUs: gs}
		if err != nil {
			s.SMI.Error = err.Error()
		}
	}
	s.SMI.Millis = ms(time.Since(t))

	if withXML {
		t = time.Now()
		r := result{}
		out, err := gpu.ExecNvidiaSMI(ctx, gpu.QueryXMLArgs())
		if err == nil {
			r.GPUs, err = gpu.ParseQueryXML(bytes.NewReader(out))
		}
		if err != nil {
			r.Error = err.Error()
		}
		r.Millis = ms(time.Since(t))
		s.XML = &r
	}
	s.Differences = compare(s.NVML.GPUs, s.SMI.GPUs)
	return s
}

func run(ctx context.Context, src gpu.Source) result {
	t := time.Now()
	gs, err := src.GPUs(ctx)
	r := result{GPUs: gs, Millis: ms(time.Since(t))}
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())/10) / 100 }

// compare lists the fields where NVML and nvidia-smi disagree. Utilization, temperature and
// power are sampled at slightly different times, so small differences there are expected.
func compare(a, b []gpu.GPU) []string {
	d := []string{}
	if len(a) == 0 || len(b) == 0 {
		return d
	}
	if len(a) != len(b) {
		return append(d, fmt.Sprintf("GPU count: nvml %d, nvidia-smi %d", len(a), len(b)))
	}
	for i := range a {
		x, y := a[i], b[i]
		f := func(name string, u, v any) {
			if fmt.Sprint(u) != fmt.Sprint(v) {
				d = append(d, fmt.Sprintf("GPU %d %s: nvml %v, nvidia-smi %v", i, name, u, v))
			}
		}
		f("index", x.Index, y.Index)
		f("uuid", x.UUID, y.UUID)
		f("name", x.Name, y.Name)
		f("memory_used_mib", x.MemoryUsedMiB, y.MemoryUsedMiB)
		f("memory_total_mib", x.MemoryTotalMiB, y.MemoryTotalMiB)
		f("utilization_pct", x.UtilizationPct, y.UtilizationPct)
		f("temperature_c", x.TemperatureC, y.TemperatureC)
		f("power_w", x.PowerW, y.PowerW)
		f("power_limit_w", x.PowerLimitW, y.PowerLimitW)
		f("driver_version", x.Driver, y.Driver)
	}
	return d
}
