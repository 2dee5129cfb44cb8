package gpu

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
)

// QueryXMLArgs are the nvidia-smi arguments whose output ParseQueryXML reads. It has more
// than QueryArgs (the CUDA version, the processes) but is ~27 KB per GPU.
func QueryXMLArgs() []string { return []string{"-q", "-x"} }

type xmlLog struct {
	XMLName xml.Name `xml:"nvidia_smi_log"`
	Driver  string   `xml:"driver_version"`
	CUDA    string   `xml:"cuda_version"`
	GPUs    []xmlGPU `xml:"gpu"`
}

type xmlGPU struct {
	Name string `xml:"product_name"`
	UUID string `xml:"uuid"`
	FB   struct {
		Total string `xml:"total"`
		Used  string `xml:"used"`
	} `xml:"fb_memory_usage"`
	Util struct {
		GPU string `xml:"gpu_util"`
	} `xml:"utilization"`
	Temp struct {
		GPU string `xml:"gpu_temp"`
	} `xml:"temperature"`
	Power    xmlPower `xml:"gpu_power_readings"` // drivers ≥ 530
	PowerOld xmlPower `xml:"power_readings"`     // older drivers
	Procs    struct {
		P []struct {
			PID  string `xml:"pid"`
			Name string `xml:"process_name"`
			Used string `xml:"used_memory"`
		} `xml:"process_info"`
	} `xml:"processes"`
}

type xmlPower struct {
	Draw     string `xml:"power_draw"`
	Average  string `xml:"average_power_draw"`
	Instant  string `xml:"instant_power_draw"`
	Limit    string `xml:"power_limit"`
	Current  string `xml:"current_power_limit"`
	Enforced string `xml:"enforced_power_limit"`
}

// ParseQueryXML reads the output of `nvidia-smi -q -x` (QueryXMLArgs). Index is the GPU's
// position in the output, which is nvidia-smi's index. PowerW is what --query-gpu calls
// power.draw: power_draw where the driver reports it, else average_power_draw (drivers ≥
// 550), else instant_power_draw; PowerLimitW is the current (software) power limit.
func ParseQueryXML(r io.Reader) ([]GPU, error) {
	var log xmlLog
	d := xml.NewDecoder(r)
	if err := d.Decode(&log); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("no nvidia_smi_log in the output")
		}
		return nil, err
	}
	driver := xmlString(log.Driver)
	cuda := xmlString(log.CUDA)
	gpus := make([]GPU, 0, len(log.GPUs))
	for i, x := range log.GPUs {
		g := GPU{
			Index:  i,
			Name:   xmlString(x.Name),
			UUID:   xmlString(x.UUID),
			Driver: driver,
			CUDA:   cuda,
		}
		var err error
		fail := func(what, v string, e error) error {
			return fmt.Errorf("gpu %d: %s: %q: %w", i, what, clip(strings.TrimSpace(v)), e)
		}
		if g.MemoryTotalMiB, err = xmlInt64(x.FB.Total, "MiB"); err != nil {
			return nil, fail("fb_memory_usage/total", x.FB.Total, err)
		}
		if g.MemoryUsedMiB, err = xmlInt64(x.FB.Used, "MiB"); err != nil {
			return nil, fail("fb_memory_usage/used", x.FB.Used, err)
		}
		var n int64
		if n, err = xmlInt64(x.Util.GPU, "%"); err != nil || n != int64(int(n)) {
			return nil, fail("utilization/gpu_util", x.Util.GPU, orRange(err))
		}
		g.UtilizationPct = int(n)
		if n, err = xmlInt64(x.Temp.GPU, "C"); err != nil || n != int64(int(n)) {
			return nil, fail("temperature/gpu_temp", x.Temp.GPU, orRange(err))
		}
		g.TemperatureC = int(n)
		if g.PowerW, err = xmlFloat("power draw", x.Power.Draw, x.Power.Average, x.Power.Instant,
			x.PowerOld.Draw, x.PowerOld.Average, x.PowerOld.Instant); err != nil {
			return nil, fmt.Errorf("gpu %d: %w", i, err)
		}
		if g.PowerLimitW, err = xmlFloat("power limit", x.Power.Limit, x.Power.Current, x.Power.Enforced,
			x.PowerOld.Limit, x.PowerOld.Current, x.PowerOld.Enforced); err != nil {
			return nil, fmt.Errorf("gpu %d: %w", i, err)
		}
		for _, p := range x.Procs.P {
			pid, err := xmlInt64(p.PID, "")
			if err != nil || pid != int64(int(pid)) {
				return nil, fail("process pid", p.PID, orRange(err))
			}
			used, err := xmlInt64(p.Used, "MiB")
			if err != nil {
				return nil, fail("process used_memory", p.Used, err)
			}
			g.Processes = append(g.Processes, Process{PID: int(pid), Name: xmlString(p.Name), UsedMiB: used})
		}
		gpus = append(gpus, g)
	}
	return gpus, nil
}

func orRange(err error) error {
	if err != nil {
		return err
	}
	return errors.New("out of range")
}

func xmlString(s string) string {
	s = strings.TrimSpace(s)
	if unknownValue(s) {
		return ""
	}
	return s
}

func xmlInt64(v, unit string) (int64, error) {
	v = strings.TrimSpace(v)
	if unknownValue(v) {
		return 0, nil
	}
	return parseInt64(v, unit)
}

// xmlFloat returns the first known value of vs, in watts.
func xmlFloat(what string, vs ...string) (float64, error) {
	for _, v := range vs {
		v = strings.TrimSpace(v)
		if unknownValue(v) {
			continue
		}
		f, err := parseFloat(v, "W")
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %w", what, clip(v), err)
		}
		return f, nil
	}
	return 0, nil
}
