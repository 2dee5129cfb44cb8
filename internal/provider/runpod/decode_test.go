package runpod

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// A REST v1 pod as recorded from the live API by another project (identity scrubbed
// there), plus scopectl's env: createdAt in Go's time.String layout, costPerHr a
// number, machine {} without ?includeMachine.
const recordedV1Pod = `{
 "consumerUserId": "user_SCRUBBED", "containerDiskInGb": 30, "costPerHr": 0.72,
 "createdAt": "2026-08-20 06:16:19.436 +0000 UTC", "desiredStatus": "RUNNING",
 "env": {"PUBLIC_KEY": "ssh-ed25519 SCRUBBED", "SCOPECTL_REQUEST_ID": "scabc123", "HF_TOKEN": "hf_LEAKLEAKLEAKLEAKLEAK", "SCOPECTL_SECRET_ENV": "HF_TOKEN,OTHER", "OTHER": "plain-looking"},
 "gpuCount": 1, "id": "5xpma5eg46tqjq", "imageName": "runpod/pytorch:1.0.7-cu1281-torch291-ubuntu2204",
 "lastStartedAt": "2026-08-20 06:16:19.43 +0000 UTC", "machine": {}, "machineId": "ohkxhsnz9mko",
 "memoryInGb": 62, "name": "imgtbx-v2-probe", "networkVolumeId": "grvtso8ftn", "ports": ["22/tcp"],
 "portMappings": {"22": 35558}, "publicIp": "213.173.104.74", "templateId": "", "vcpuCount": 12,
 "volumeInGb": 0, "volumeMountPath": "/workspace"
}`

// The docs' example: costPerHr a string, gpu at the top level, image not imageName.
const docsV1Pod = `{"adjustedCostPerHr": 0.69, "costPerHr": "0.74", "desiredStatus": "EXITED",
 "env": {"ENV_VAR": "value"}, "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 2, "displayName": "RTX 4090"},
 "id": "xedezhzb9la3ye", "image": "runpod/pytorch:2.1.0", "lastStartedAt": "2024-07-12T19:14:40.144Z",
 "machine": {"gpuTypeId": "NVIDIA A40"}, "networkVolume": {"id": "agv6w2qcg7"}, "portMappings": null, "publicIp": null,
 "ports": ["8888/http", "22/tcp"], "volumeInGb": 20}`

// GraphQL's spelling (runpodctl's LegacyPod): env as "K=V" strings, ports one string.
const legacyPod = `{"id": "abc", "name": "n", "desiredStatus": "RUNNING", "costPerHr": 0.44, "gpuCount": 1,
 "env": ["A=1", "SCOPECTL_REQUEST_ID=sc1", "DB_PASSWORD=hunter2hunter2"], "ports": "8888/http,22/tcp",
 "machine": {"gpuDisplayName": "RTX 4090"}, "runtime": {"ports": [{"ip": "1.2.3.4", "isIpPublic": true, "privatePort": 22, "publicPort": 2222, "type": "tcp"}]}}`

func TestDecodeRecorded(t *testing.T) {
	p, err := decodePod([]byte(recordedV1Pod), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2026, 8, 20, 6, 16, 19, 436e6, time.UTC)
	if p.ID != "5xpma5eg46tqjq" || p.Status != "RUNNING" || p.CostPerHr != 0.72 || p.GPUCount != 1 ||
		p.PublicIP != "213.173.104.74" || p.Ports["22/tcp"] != 35558 || p.NetworkVolumeID != "grvtso8ftn" ||
		!p.CreatedAt.Equal(want) || p.Tag != "scabc123" || p.GPUType != "" || p.Image == "" {
		t.Errorf("%+v", p)
	}
	if !p.StartedAt.Equal(time.Date(2026, 8, 20, 6, 16, 19, 430e6, time.UTC)) {
		t.Errorf("started at %v", p.StartedAt)
	}
	if up := p.Uptime(want.Add(2 * time.Hour)); up != 2*time.Hour+6*time.Millisecond {
		t.Errorf("uptime %v", up)
	}
	if host, port, ok := p.SSH(); !ok || host != "213.173.104.74" || port != 35558 {
		t.Errorf("ssh %s %d", host, port)
	}
	if p.Env["HF_TOKEN"] != provider.SecretValue || p.Env["OTHER"] != provider.SecretValue ||
		p.Env["PUBLIC_KEY"] == provider.SecretValue || p.Env["SCOPECTL_SECRET_ENV"] != "HF_TOKEN,OTHER" {
		t.Errorf("env %v", p.Env)
	}

	p, err = decodePod([]byte(docsV1Pod), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.CostPerHr != 0.74 || p.GPUType != "NVIDIA GeForce RTX 4090" || p.GPUCount != 2 || p.Image != "runpod/pytorch:2.1.0" ||
		p.PublicIP != "" || p.Ports != nil || p.NetworkVolumeID != "agv6w2qcg7" || p.VolumeGB != 20 || p.Tag != "" || !p.CreatedAt.IsZero() {
		t.Errorf("%+v", p)
	}

	p, err = decodePod([]byte(legacyPod), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Env["A"] != "1" || p.Tag != "sc1" || p.Env["DB_PASSWORD"] != provider.SecretValue || !p.StartedAt.IsZero() {
		t.Errorf("%+v", p)
	}

	// GraphQL: the running container's uptime.
	p, err = decodePod([]byte(`{"id": "abc", "desiredStatus": "RUNNING", "costPerHr": 0.5, "runtime": {"uptimeInSeconds": 7200}}`), nil)
	if err != nil || math.Abs(time.Since(p.StartedAt).Hours()-2) > 0.01 || math.Abs(p.CostSoFar(time.Now())-1) > 0.01 {
		t.Errorf("uptimeInSeconds: %v %+v", err, p)
	}
	if p.Status = provider.StatusExited; p.Uptime(time.Now()) != 0 || p.CostSoFar(time.Now()) != 0 {
		t.Errorf("a stopped pod has uptime")
	}

	pods, err := decodePods([]byte("["+recordedV1Pod+","+docsV1Pod+"]"), nil)
	if err != nil || len(pods) != 2 {
		t.Fatalf("%v %d", err, len(pods))
	}
	if pods, err := decodePods([]byte(`{"pods": [`+legacyPod+`]}`), nil); err != nil || len(pods) != 1 {
		t.Fatalf("enveloped list: %v", err)
	}
}

func TestDecodeMasksKnownSecrets(t *testing.T) {
	r := &secret.Redactor{}
	r.Add(secret.New("s3cr3t-value-that-is-long"))
	p, err := decodePod([]byte(`{"id":"x","env":{"INNOCENT":"prefix-s3cr3t-value-that-is-long","RUNPOD_API_KEY":"rpa_XXXXXXXXXXXXXXXX","NOTE":"hello"}}`), r)
	if err != nil {
		t.Fatal(err)
	}
	if p.Env["INNOCENT"] != provider.SecretValue || p.Env["RUNPOD_API_KEY"] != provider.SecretValue || p.Env["NOTE"] != "hello" {
		t.Errorf("%v", p.Env)
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, in := range []string{
		``, `null`, `[]`, `{}`, `{"id": ""}`, `{"id": "x", "costPerHr": -1}`, `{"id": "x", "costPerHr": "NaN"}`,
		`{"id": "x", "gpuCount": 1.5}`, `{"id": "x", "gpuCount": -1}`, `{"id": "x", "env": 5}`, `{"id": {"a": 1}}`,
		`{"id": "x", "costPerHr": "1e999"}`, `{"id": "x"`,
	} {
		if p, err := decodePod([]byte(in), nil); err == nil {
			t.Errorf("%q decoded: %+v", in, p)
		} else if strings.ContainsAny(err.Error(), "\n") {
			t.Errorf("multi-line error %q", err)
		}
	}
	// Odd but harmless shapes decode.
	p, err := decodePod([]byte(`{"id": 12345678, "portMappings": {"22": "2222", "x": 1, "80": 70000, "0": 5}, "ports": ["22/TCP"], "publicIp": " 1.2.3.4 ", "createdAt": "yesterday", "env": {"N": 5, "B": true, "Z": null}}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.ID != "12345678" || len(p.Ports) != 1 || p.Ports["22/tcp"] != 2222 || p.PublicIP != "1.2.3.4" || p.Env["N"] != "5" || p.Env["B"] != "true" {
		t.Errorf("%+v", p)
	}
}

func TestParseTime(t *testing.T) {
	want := time.Date(2026, 8, 20, 6, 16, 19, 436e6, time.UTC)
	for _, s := range []string{"2026-08-20 06:16:19.436 +0000 UTC", "2026-08-20T06:16:19.436Z", "2026-08-20T08:16:19.436+02:00",
		"2026-08-20 06:16:19.436 +0000 UTC m=+0.001", "2026-08-20 06:16:19.436"} {
		if got := parseTime(s); !got.Equal(want) {
			t.Errorf("%q → %v", s, got)
		}
	}
}

// FuzzDecodePod: no input makes decoding panic, and what decodes keeps the
// invariants the rest of scopectl relies on. Corpus: testdata/fuzz/FuzzDecodePod.
func FuzzDecodePod(f *testing.F) {
	for _, s := range []string{recordedV1Pod, docsV1Pod, legacyPod, `{"id":"x"}`, `[` + recordedV1Pod + `]`,
		`{"id":"x","env":[{"key":"HF_TOKEN","value":"hf_abcdefabcdefabcdef"}],"portMappings":{"22":"22"}}`} {
		f.Add([]byte(s))
	}
	const fuzzSecret = "fuzz-secret-value-0123456789"
	r := &secret.Redactor{}
	r.Add(secret.New(fuzzSecret))
	f.Fuzz(func(t *testing.T, data []byte) {
		pods, err := decodePods(data, r)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("multi-line error %q", err)
			}
			pods = nil
		}
		if p, err := decodePod(data, r); err == nil {
			pods = append(pods, *p)
		} else if strings.ContainsAny(err.Error(), "\n\r") {
			t.Fatalf("multi-line error %q", err)
		}
		for _, p := range pods {
			if p.ID == "" {
				t.Fatal("pod without id decoded")
			}
			if p.CostPerHr < 0 || math.IsNaN(p.CostPerHr) || math.IsInf(p.CostPerHr, 0) || p.GPUCount < 0 || p.VolumeGB < 0 {
				t.Fatalf("bad numbers %+v", p)
			}
			for k, v := range p.Ports {
				if v < 1 || v > 65535 || !strings.Contains(k, "/") {
					t.Fatalf("bad port %s → %d", k, v)
				}
			}
			if p.Tag != "" && provider.CheckRequestID(p.Tag) != nil {
				t.Fatalf("bad tag %q", p.Tag)
			}
			for k, v := range p.Env {
				if (provider.IsSecretEnvName(k) || strings.Contains(v, fuzzSecret)) && v != "" && v != provider.SecretValue {
					t.Fatalf("secret %s not masked: %q", k, v)
				}
			}
		}
	})
}
