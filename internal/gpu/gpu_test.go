package gpu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestQueryArgs(t *testing.T) {
	want := []string{
		"--query-gpu=index,uuid,name,memory.used,memory.total,utilization.gpu,temperature.gpu,power.draw,power.limit,driver_version",
		"--format=csv,noheader,nounits",
	}
	if got := QueryArgs(); !reflect.DeepEqual(got, want) {
		t.Fatalf("QueryArgs() = %q", got)
	}
	if got, want := QueryCommand(), "nvidia-smi "+want[0]+" "+want[1]; got != want {
		t.Fatalf("QueryCommand() = %q", got)
	}
	a := QueryArgs()
	a[0] = "x"
	if QueryArgs()[0] == "x" {
		t.Fatal("QueryArgs shares its slice")
	}
}

func TestSMI(t *testing.T) {
	fixture := readFile(t, "h100-idle-query-noheader-nounits.csv")
	var gotArgs []string
	s := SMI{Run: func(ctx context.Context, args []string) ([]byte, error) {
		gotArgs = args
		return fixture, nil
	}}
	gpus, err := s.GPUs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotArgs, QueryArgs()) {
		t.Errorf("ran nvidia-smi %q", gotArgs)
	}
	if want := []GPU{h100Idle}; !reflect.DeepEqual(gpus, want) {
		t.Errorf("got %+v\nwant %+v", gpus, want)
	}

	boom := errors.New("ssh: connection refused")
	s.Run = func(context.Context, []string) ([]byte, error) { return nil, boom }
	if _, err := s.GPUs(context.Background()); !errors.Is(err, boom) {
		t.Errorf("err = %v", err)
	}
	s.Run = func(context.Context, []string) ([]byte, error) {
		return []byte("No devices were found\n"), errors.New("exit status 6")
	}
	if gpus, err := s.GPUs(context.Background()); err != nil || gpus == nil || len(gpus) != 0 {
		t.Errorf("no devices: %v, %v", gpus, err)
	}
	s.Run = func(context.Context, []string) ([]byte, error) {
		return []byte("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"), nil
	}
	if _, err := s.GPUs(context.Background()); err == nil || !strings.Contains(err.Error(), "couldn't communicate") {
		t.Errorf("err = %v", err)
	}
}

// fakeSMI puts an nvidia-smi on PATH that prints the given fixture for --query-gpu and
// fails otherwise.
func fakeSMI(t *testing.T, fixture string) {
	dir := t.TempDir()
	script := fmt.Sprintf(`#!/bin/sh
case "$1" in
--query-gpu=*) cat %q ;;
*) echo "Invalid combination of input arguments." ; exit 2 ;;
esac
`, filepath.Join(mustAbs(t, "testdata"), fixture))
	if err := os.WriteFile(filepath.Join(dir, "nvidia-smi"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestLocalFallsBackToNvidiaSMI(t *testing.T) {
	if (NVML{}).probe() == nil {
		t.Skip("NVML works here; Local picks it (TestNVMLLive)")
	}
	fakeSMI(t, "h100-busy-query-noheader-nounits.csv")
	ctx := context.Background()
	src := Local(ctx)
	if fmt.Sprint(src) != "nvidia-smi" {
		t.Fatalf("Local() = %v, want nvidia-smi", src)
	}
	gpus, err := src.GPUs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []GPU{h100Busy}; !reflect.DeepEqual(gpus, want) {
		t.Errorf("got %+v\nwant %+v", gpus, want)
	}
	// ExecNvidiaSMI reports what nvidia-smi printed when it fails.
	_, err = ExecNvidiaSMI(ctx, []string{"--bogus"})
	if err == nil || !strings.Contains(err.Error(), "Invalid combination") {
		t.Errorf("err = %v", err)
	}
}

func TestLocalNoGPU(t *testing.T) {
	if (NVML{}).probe() == nil {
		t.Skip("NVML works here")
	}
	t.Setenv("PATH", t.TempDir())
	src := Local(context.Background())
	if fmt.Sprint(src) != "none" {
		t.Fatalf("Local() = %v, want none", src)
	}
	_, err := src.GPUs(context.Background())
	if !errors.Is(err, ErrNoGPU) || !errors.Is(err, ErrNoNVML) {
		t.Fatalf("err = %v, want ErrNoGPU wrapping ErrNoNVML", err)
	}
	t.Log(err)
}

func TestJSONNames(t *testing.T) {
	want := []string{"index", "uuid", "name", "memory_used_mib", "memory_total_mib", "utilization_pct",
		"temperature_c", "power_w", "power_limit_w", "driver_version", "cuda_version,omitempty", "processes,omitempty"}
	var got []string
	ty := reflect.TypeFor[GPU]()
	for i := range ty.NumField() {
		got = append(got, ty.Field(i).Tag.Get("json"))
	}
	if !slices.Equal(got, want) {
		t.Errorf("GPU json tags %q", got)
	}
	got = nil
	ty = reflect.TypeFor[Process]()
	for i := range ty.NumField() {
		got = append(got, ty.Field(i).Tag.Get("json"))
	}
	if want := []string{"pid", "name", "used_mib"}; !slices.Equal(got, want) {
		t.Errorf("Process json tags %q", got)
	}
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMiB(t *testing.T) {
	for _, c := range []struct {
		b    uint64
		want int64
	}{{0, 0}, {1, 1}, {1 << 20, 1}, {1<<20 + 1, 2}, {22031433728, 21011}, {62986059776, 60069}, {85520809984, 81559}, {1 << 63, 0}} {
		if got := mib(c.b); got != c.want {
			t.Errorf("mib(%d) = %d, want %d", c.b, got, c.want)
		}
	}
}
