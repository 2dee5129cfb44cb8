package gpu

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// seeds adds every testdata file ending in ext to f's corpus, with more.
func seeds(f testing.TB, ext string, add func([]byte)) {
	files, err := filepath.Glob(filepath.Join("testdata", "*"+ext))
	if err != nil || len(files) == 0 {
		f.Fatalf("no testdata/*%s: %v", ext, err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		add(b)
	}
}

func checkGPUs(t *testing.T, gpus []GPU) {
	t.Helper()
	for _, g := range gpus {
		if math.IsNaN(g.PowerW) || math.IsInf(g.PowerW, 0) || math.IsNaN(g.PowerLimitW) || math.IsInf(g.PowerLimitW, 0) {
			t.Fatalf("non-finite power: %+v", g)
		}
		if g.Index < 0 {
			t.Fatalf("negative index: %+v", g)
		}
	}
	if _, err := json.Marshal(gpus); err != nil {
		t.Fatalf("json: %v", err)
	}
}

// plain reports whether s survives being written as one nvidia-smi CSV cell.
func plain(s string) bool {
	return !strings.ContainsAny(s, ",\r\n") && s == strings.TrimSpace(s) && !unknownValue(s) || s == ""
}

func FuzzParseQueryCSV(f *testing.F) {
	seeds(f, ".csv", func(b []byte) { f.Add(b, true); f.Add(b, false) })
	f.Add([]byte("0, GPU-a, T4, [N/A], 15360 MiB, [Not Supported], 34, 9.85 W, 70.00 W, 535.1\n"), false)
	f.Add([]byte("index, name, power.draw [W]\n0, a, b, c, [N/A]\n"), true)
	f.Fuzz(func(t *testing.T, data []byte, header bool) {
		gpus, err := ParseQueryCSV(bytes.NewReader(data), header)
		if err != nil {
			return
		}
		checkGPUs(t, gpus)
		if n := bytes.Count(data, []byte("\n")) + 1; len(gpus) > n {
			t.Fatalf("%d GPUs from %d lines", len(gpus), n)
		}
		// Written back as QueryArgs' output, the GPUs read the same.
		var buf bytes.Buffer
		for _, g := range gpus {
			if !plain(g.UUID) || !plain(g.Name) || !plain(g.Driver) {
				return
			}
			fmt.Fprintf(&buf, "%d, %s, %s, %d, %d, %d, %d, %s, %s, %s\n", g.Index, g.UUID, g.Name,
				g.MemoryUsedMiB, g.MemoryTotalMiB, g.UtilizationPct, g.TemperatureC,
				strconv.FormatFloat(g.PowerW, 'g', -1, 64), strconv.FormatFloat(g.PowerLimitW, 'g', -1, 64), g.Driver)
		}
		again, err := ParseQueryCSV(&buf, false)
		if err != nil {
			t.Fatalf("re-reading %q: %v", buf.String(), err)
		}
		if !reflect.DeepEqual(again, gpus) {
			t.Fatalf("round trip:\n%+v\n%+v", gpus, again)
		}
	})
}

// compactXML keeps the lines of an `nvidia-smi -q -x` capture that ParseQueryXML reads
// (the captures have one element or one tag per line).
func compactXML(b []byte) []byte {
	keep := map[string]bool{}
	for _, t := range strings.Fields(`nvidia_smi_log driver_version cuda_version gpu product_name uuid
		fb_memory_usage total used utilization gpu_util temperature gpu_temp gpu_power_readings
		power_readings power_draw average_power_draw instant_power_draw power_limit
		current_power_limit enforced_power_limit processes process_info pid process_name used_memory`) {
		keep[t] = true
	}
	var out []byte
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		tag := strings.TrimLeft(strings.TrimSpace(string(line)), "</")
		if i := strings.IndexAny(tag, " >"); i >= 0 {
			tag = tag[:i]
		}
		if keep[tag] {
			out = append(out, bytes.TrimLeft(line, " \t")...)
		}
	}
	return out
}

func TestCompactXML(t *testing.T) {
	seeds(t, ".xml", func(b []byte) {
		full, err := ParseQueryXML(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		c := compactXML(b)
		compact, err := ParseQueryXML(bytes.NewReader(c))
		if err != nil {
			t.Fatalf("%v\n%s", err, c)
		}
		if !reflect.DeepEqual(full, compact) || len(c) > 2500 {
			t.Errorf("compact (%d bytes) %+v\nfull %+v", len(c), compact, full)
		}
	})
}

// xmlText reports whether s comes back unchanged through xml.EscapeText and the decoder.
func xmlText(s string) bool {
	if !utf8.ValidString(s) || s != strings.TrimSpace(s) || unknownValue(s) && s != "" {
		return false
	}
	for _, r := range s {
		if !(r == 0x09 || r == 0x0A || r == 0x0D || r >= 0x20 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF) {
			return false
		}
	}
	return true
}

func FuzzParseQueryXML(f *testing.F) {
	// The recorded captures are ~27 KB, mostly elements the parser skips; the fuzzer mutates
	// (and minimizes) large inputs slowly, so it starts from their relevant lines only.
	seeds(f, ".xml", func(b []byte) { f.Add(compactXML(b)) })
	f.Add([]byte(oldXML))
	f.Add([]byte("<nvidia_smi_log><gpu><fb_memory_usage><used>1 MiB</used></fb_memory_usage></gpu></nvidia_smi_log>"))
	f.Fuzz(func(t *testing.T, data []byte) {
		gpus, err := ParseQueryXML(bytes.NewReader(data))
		if err != nil {
			return
		}
		checkGPUs(t, gpus)
		for i, g := range gpus {
			if g.Index != i {
				t.Fatalf("GPU %d has index %d", i, g.Index)
			}
		}
		// Written back in the current driver's layout, the GPUs read the same.
		esc := func(s string) string {
			var b strings.Builder
			xml.EscapeText(&b, []byte(s))
			return b.String()
		}
		var buf strings.Builder
		buf.WriteString("<nvidia_smi_log>")
		if len(gpus) > 0 {
			if !xmlText(gpus[0].Driver) || !xmlText(gpus[0].CUDA) {
				return
			}
			fmt.Fprintf(&buf, "<driver_version>%s</driver_version><cuda_version>%s</cuda_version>", esc(gpus[0].Driver), esc(gpus[0].CUDA))
		}
		for _, g := range gpus {
			if !xmlText(g.Name) || !xmlText(g.UUID) {
				return
			}
			fmt.Fprintf(&buf, "<gpu><product_name>%s</product_name><uuid>%s</uuid>", esc(g.Name), esc(g.UUID))
			fmt.Fprintf(&buf, "<fb_memory_usage><total>%d MiB</total><used>%d MiB</used></fb_memory_usage>", g.MemoryTotalMiB, g.MemoryUsedMiB)
			fmt.Fprintf(&buf, "<utilization><gpu_util>%d %%</gpu_util></utilization><temperature><gpu_temp>%d C</gpu_temp></temperature>", g.UtilizationPct, g.TemperatureC)
			fmt.Fprintf(&buf, "<gpu_power_readings><average_power_draw>%s W</average_power_draw><current_power_limit>%s W</current_power_limit></gpu_power_readings>",
				strconv.FormatFloat(g.PowerW, 'g', -1, 64), strconv.FormatFloat(g.PowerLimitW, 'g', -1, 64))
			buf.WriteString("<processes>")
			for _, p := range g.Processes {
				if !xmlText(p.Name) {
					return
				}
				fmt.Fprintf(&buf, "<process_info><pid>%d</pid><process_name>%s</process_name><used_memory>%d MiB</used_memory></process_info>", p.PID, esc(p.Name), p.UsedMiB)
			}
			buf.WriteString("</processes></gpu>")
		}
		buf.WriteString("</nvidia_smi_log>")
		again, err := ParseQueryXML(strings.NewReader(buf.String()))
		if err != nil {
			t.Fatalf("re-reading %q: %v", buf.String(), err)
		}
		if !reflect.DeepEqual(again, gpus) {
			t.Fatalf("round trip:\n%+v\n%+v", gpus, again)
		}
	})
}
