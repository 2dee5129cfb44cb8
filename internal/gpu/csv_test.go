package gpu

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

const h100UUID = "GPU-1a2672be-e00e-9820-6c73-d2e90ad0dd20"

// Recorded on an H100 80GB HBM3, driver 580.159.04 (testdata/README.md).
var (
	h100Idle = GPU{Index: 0, UUID: h100UUID, Name: "NVIDIA H100 80GB HBM3",
		MemoryUsedMiB: 0, MemoryTotalMiB: 81559, UtilizationPct: 0, TemperatureC: 42,
		PowerW: 73.17, PowerLimitW: 700, Driver: "580.159.04"}
	h100Busy = GPU{Index: 0, UUID: h100UUID, Name: "NVIDIA H100 80GB HBM3",
		MemoryUsedMiB: 21491, MemoryTotalMiB: 81559, UtilizationPct: 100, TemperatureC: 67,
		PowerW: 698.84, PowerLimitW: 700, Driver: "580.159.04"}
)

func with(g GPU, f func(*GPU)) GPU { f(&g); return g }

func TestParseQueryCSVFixtures(t *testing.T) {
	power := func(g GPU, w float64) GPU { return with(g, func(g *GPU) { g.PowerW = w }) }
	tests := []struct {
		file   string
		header bool
		want   GPU
	}{
		// The four --format variants of QueryArgs' query, sampled one after another.
		{"h100-idle-query.csv", true, power(h100Idle, 73.11)},
		{"h100-idle-query-nounits.csv", true, power(h100Idle, 73.13)},
		{"h100-idle-query-noheader.csv", false, h100Idle},
		{"h100-idle-query-noheader-nounits.csv", false, h100Idle},
		{"h100-busy-query.csv", true, power(h100Busy, 699.63)},
		{"h100-busy-query-nounits.csv", true, power(h100Busy, 699.19)},
		{"h100-busy-query-noheader.csv", false, power(h100Busy, 698.41)},
		{"h100-busy-query-noheader-nounits.csv", false, h100Busy},
		// More fields, gpu_name/gpu_uuid (headed "name"/"uuid" again), power.draw next to
		// power.draw.average and .instant, enforced.power.limit, pstate (not ours).
		{"h100-idle-query-wide.csv", true, h100Idle},
		{"h100-busy-query-wide.csv", true, power(h100Busy, 699.64)},
		// /work/shared/testdata/nvidia-smi/nvidia-smi-query.csv: other order, extra fields.
		{"h100-a-query-14col.csv", true, GPU{Index: 0, UUID: "GPU-bb5b32ae-ab39-beea-2d42-07237821e592",
			Name: "NVIDIA H100 80GB HBM3", MemoryUsedMiB: 0, MemoryTotalMiB: 81559, UtilizationPct: 0,
			TemperatureC: 37, PowerW: 122.86, PowerLimitW: 700, Driver: "580.159.04"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := ParseQueryCSV(bytes.NewReader(readFile(t, tt.file)), tt.header)
			if err != nil {
				t.Fatal(err)
			}
			if want := []GPU{tt.want}; !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseQueryCSVColumns(t *testing.T) {
	// --query-gpu=index,name,uuid,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw --format=csv,noheader,nounits
	cols := []string{"index", "name", "uuid", "memory.total", "memory.used", "utilization.gpu", "temperature.gpu", "power.draw"}
	got, err := ParseQueryCSVColumns(bytes.NewReader(readFile(t, "h100-a-query-8col-noheader-nounits.csv")), cols)
	if err != nil {
		t.Fatal(err)
	}
	want := []GPU{{Index: 0, UUID: "GPU-bb5b32ae-ab39-beea-2d42-07237821e592", Name: "NVIDIA H100 80GB HBM3",
		MemoryTotalMiB: 81559, TemperatureC: 37, PowerW: 122.86}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	// Read with QueryArgs' columns, the 8 fields are refused, not misread.
	if _, err := ParseQueryCSV(bytes.NewReader(readFile(t, "h100-a-query-8col-noheader-nounits.csv")), false); err == nil {
		t.Error("8 fields read as queryFields")
	}
	if _, err := ParseQueryCSVColumns(strings.NewReader(""), []string{"clocks.sm", "pstate"}); err == nil {
		t.Error("no known column accepted")
	}
}

func TestParseQueryCSVSynthetic(t *testing.T) {
	tests := []struct {
		name, in string
		header   bool
		want     []GPU
	}{
		{"empty", "", false, []GPU{}},
		{"blank lines, CRLF", "\r\n0, GPU-a, Tesla T4, 3, 15360, 0, 34, 9.85, 70.00, 535.129.03\r\n\r\n", false,
			[]GPU{{UUID: "GPU-a", Name: "Tesla T4", MemoryUsedMiB: 3, MemoryTotalMiB: 15360, TemperatureC: 34,
				PowerW: 9.85, PowerLimitW: 70, Driver: "535.129.03"}}},
		{"unsupported values, several GPUs, units",
			"0, GPU-a, NVIDIA A100-SXM4-80GB, 1024 MiB, 81920 MiB, [N/A], 35, [Not Supported], [N/A], 535.129.03\n" +
				"1, GPU-b, NVIDIA A100-SXM4-80GB, [N/A], 81920 MiB, 7 %, [Unknown Error], 61.20 W, 400.00 W, 535.129.03\n" +
				"2, GPU-c, NVIDIA A100-SXM4-80GB, N/A, [Insufficient Permissions], 100 %, 80, 399.99 W, 400.00 W, 535.129.03\n",
			false, []GPU{
				{Index: 0, UUID: "GPU-a", Name: "NVIDIA A100-SXM4-80GB", MemoryUsedMiB: 1024, MemoryTotalMiB: 81920, TemperatureC: 35, Driver: "535.129.03"},
				{Index: 1, UUID: "GPU-b", Name: "NVIDIA A100-SXM4-80GB", MemoryTotalMiB: 81920, UtilizationPct: 7, PowerW: 61.2, PowerLimitW: 400, Driver: "535.129.03"},
				{Index: 2, UUID: "GPU-c", Name: "NVIDIA A100-SXM4-80GB", UtilizationPct: 100, TemperatureC: 80, PowerW: 399.99, PowerLimitW: 400, Driver: "535.129.03"},
			}},
		{"comma in name", "3, GPU-a, Foo, Bar GPU, 1, 2, 3, 4, 5.5, 6, 1.0\n", false,
			[]GPU{{Index: 3, UUID: "GPU-a", Name: "Foo, Bar GPU", MemoryUsedMiB: 1, MemoryTotalMiB: 2, UtilizationPct: 3,
				TemperatureC: 4, PowerW: 5.5, PowerLimitW: 6, Driver: "1.0"}}},
		{"header: any order, unknown fields, no index",
			"pstate, power.draw.instant [W], power.draw [W], temperature.gpu, name, memory.total [MiB]\n" +
				"P0, 10.5 W, [N/A], 30, GPU X, 100 MiB\nP8, 11 W, 12 W, 31, GPU Y, 200 MiB\n",
			true, []GPU{
				{Index: 0, Name: "GPU X", MemoryTotalMiB: 100, TemperatureC: 30, PowerW: 10.5},
				{Index: 1, Name: "GPU Y", MemoryTotalMiB: 200, TemperatureC: 31, PowerW: 12},
			}},
		{"header only", "index, name\n", true, []GPU{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseQueryCSV(strings.NewReader(tt.in), tt.header)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseQueryCSVErrors(t *testing.T) {
	tests := []struct {
		name, in string
		header   bool
		want     string
	}{
		{"too few fields", "0, GPU-a, T4, 3, 15360, 0, 34, 9.85, 70.00\n", false, "9 fields, want 10"},
		{"nvidia-smi error text", "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n", false, "1 fields, want 10"},
		{"not a number", "0, GPU-a, T4, lots, 15360, 0, 34, 9.85, 70.00, 1\n", false, `memory.used: "lots"`},
		{"wrong unit", "0, GPU-a, T4, 3 GiB, 15360, 0, 34, 9.85, 70.00, 1\n", false, "memory.used"},
		{"NaN", "0, GPU-a, T4, 3, 15360, 0, 34, NaN, 70.00, 1\n", false, "power.draw"},
		{"Inf", "0, GPU-a, T4, 3, 15360, 0, 34, 9.85, +Inf, 1\n", false, "power.limit"},
		{"huge", "0, GPU-a, T4, 3, 15360, 0, 34, 1e999, 70, 1\n", false, "power.draw"},
		{"hex float", "0, GPU-a, T4, 3, 15360, 0, 34, 0x1p4, 70, 1\n", false, "power.draw"},
		{"negative index", "-1, GPU-a, T4, 3, 15360, 0, 34, 1, 70, 1\n", false, "index"},
		{"int overflow", "0, GPU-a, T4, 99999999999999999999, 15360, 0, 34, 1, 70, 1\n", false, "memory.used"},
		{"no header", "", true, "no header"},
		{"not a header", "0, GPU-a, T4\n", true, "not a --query-gpu header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseQueryCSV(strings.NewReader(tt.in), tt.header)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %+v, %v; want error with %q", got, err, tt.want)
			}
		})
	}
}
