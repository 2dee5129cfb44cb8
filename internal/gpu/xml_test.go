package gpu

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestParseQueryXMLFixtures(t *testing.T) {
	cuda := func(g GPU, f func(*GPU)) GPU {
		return with(g, func(g *GPU) { g.CUDA = "13.0"; f(g) })
	}
	tests := []struct {
		file string
		want GPU
	}{
		{"h100-idle-q.xml", cuda(h100Idle, func(g *GPU) { g.PowerW = 73.21 })},
		{"h100-busy-q.xml", cuda(h100Busy, func(g *GPU) {
			g.PowerW = 701.22 // average_power_draw (instant_power_draw is 715.29)
			g.Processes = []Process{{PID: 509, Name: "python3", UsedMiB: 21482}}
		})},
		{"h100-a-q.xml", cuda(h100Idle, func(g *GPU) {
			g.UUID = "GPU-bb5b32ae-ab39-beea-2d42-07237821e592"
			g.TemperatureC, g.PowerW = 37, 122.90
		})},
		{"h100-b-q.xml", cuda(h100Idle, func(g *GPU) {
			g.UUID = "GPU-9e787c1b-6653-cdc2-e939-68e04b78899e"
			g.TemperatureC, g.PowerW = 35, 71.47
		})},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := ParseQueryXML(bytes.NewReader(readFile(t, tt.file)))
			if err != nil {
				t.Fatal(err)
			}
			if want := []GPU{tt.want}; !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

// An older driver's layout (power_readings with power_draw/power_limit), two GPUs, values
// a GPU does not report, and a process whose memory is not available.
const oldXML = `<?xml version="1.0" ?>
<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v11.dtd">
<nvidia_smi_log>
	<driver_version>470.82.01</driver_version>
	<cuda_version>11.4</cuda_version>
	<attached_gpus>2</attached_gpus>
	<gpu id="00000000:00:04.0">
		<product_name>Tesla T4</product_name>
		<uuid>GPU-aaaa</uuid>
		<minor_number>1</minor_number>
		<fb_memory_usage><total>15109 MiB</total><used>3 MiB</used><free>15106 MiB</free></fb_memory_usage>
		<bar1_memory_usage><total>256 MiB</total><used>2 MiB</used></bar1_memory_usage>
		<utilization><gpu_util>4 %</gpu_util><memory_util>0 %</memory_util></utilization>
		<temperature><gpu_temp>34 C</gpu_temp><gpu_temp_max_threshold>96 C</gpu_temp_max_threshold></temperature>
		<power_readings>
			<power_state>P8</power_state>
			<power_draw>9.85 W</power_draw>
			<power_limit>70.00 W</power_limit>
			<enforced_power_limit>65.00 W</enforced_power_limit>
		</power_readings>
		<processes>
			<process_info><pid>1234</pid><type>C</type><process_name>/usr/bin/python3</process_name><used_memory>1000 MiB</used_memory></process_info>
			<process_info><pid>99</pid><type>G</type><process_name></process_name><used_memory>N/A</used_memory></process_info>
		</processes>
	</gpu>
	<gpu id="00000000:00:05.0">
		<product_name>NVIDIA A100-SXM4-40GB</product_name>
		<uuid>GPU-bbbb</uuid>
		<mig_mode><current_mig>Enabled</current_mig></mig_mode>
		<mig_devices><mig_device><fb_memory_usage><total>4864 MiB</total><used>13 MiB</used></fb_memory_usage></mig_device></mig_devices>
		<fb_memory_usage><total>40536 MiB</total><used>N/A</used></fb_memory_usage>
		<utilization><gpu_util>N/A</gpu_util></utilization>
		<temperature><gpu_temp>N/A</gpu_temp></temperature>
		<power_readings><power_draw>[Not Supported]</power_draw><power_limit>N/A</power_limit><enforced_power_limit>400.00 W</enforced_power_limit></power_readings>
		<processes></processes>
	</gpu>
</nvidia_smi_log>
`

func TestParseQueryXMLOlderDriver(t *testing.T) {
	got, err := ParseQueryXML(strings.NewReader(oldXML))
	if err != nil {
		t.Fatal(err)
	}
	want := []GPU{
		{Index: 0, UUID: "GPU-aaaa", Name: "Tesla T4", MemoryUsedMiB: 3, MemoryTotalMiB: 15109, UtilizationPct: 4,
			TemperatureC: 34, PowerW: 9.85, PowerLimitW: 70, Driver: "470.82.01", CUDA: "11.4",
			Processes: []Process{{PID: 1234, Name: "/usr/bin/python3", UsedMiB: 1000}, {PID: 99}}},
		{Index: 1, UUID: "GPU-bbbb", Name: "NVIDIA A100-SXM4-40GB", MemoryTotalMiB: 40536,
			PowerLimitW: 400, Driver: "470.82.01", CUDA: "11.4"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestParseQueryXMLErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"empty", "", "no nvidia_smi_log"},
		{"not xml", "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", "no nvidia_smi_log"},
		{"other root", "<foo/>", "expected element type <nvidia_smi_log>"},
		{"truncated", "<nvidia_smi_log><gpu><product_name>x", "EOF"},
		{"bad memory", "<nvidia_smi_log><gpu><fb_memory_usage><used>12 GiB</used></fb_memory_usage></gpu></nvidia_smi_log>", "fb_memory_usage/used"},
		{"bad power", "<nvidia_smi_log><gpu><gpu_power_readings><average_power_draw>NaN W</average_power_draw></gpu_power_readings></gpu></nvidia_smi_log>", "power draw"},
		{"bad pid", "<nvidia_smi_log><gpu><processes><process_info><pid>x</pid></process_info></processes></gpu></nvidia_smi_log>", "process pid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseQueryXML(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %+v, %v; want error with %q", got, err, tt.want)
			}
		})
	}
}

func TestParseQueryXMLNoGPU(t *testing.T) {
	got, err := ParseQueryXML(strings.NewReader(`<nvidia_smi_log><driver_version>580.1</driver_version><attached_gpus>0</attached_gpus></nvidia_smi_log>`))
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("got %+v, %v", got, err)
	}
}
