package deploy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod"
	"github.com/daydreamlive/scopectl/internal/provider/runpod/runpodtest"
	"github.com/daydreamlive/scopectl/internal/secret"
)

const podKey = "rpa_" + "DEPLOYTESTKEY00000000000000000000"

func podFake(t *testing.T, rt runpodtest.Runtime) (*runpodtest.Server, *runpod.Client) {
	t.Helper()
	s := runpodtest.New(t, runpodtest.Options{APIKey: podKey, BootDelay: 20 * time.Millisecond, Runtime: rt})
	c, err := runpod.New(runpod.Options{APIKey: secret.New(podKey), APIURL: s.RESTURL(), GraphQLURL: s.GraphQLURL(),
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, SettleWindow: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNormalizePod(t *testing.T) {
	for _, dir := range []string{"/tmp/lora", "/workspace", "/workspacex/lora", "models/lora", "/workspace/../etc"} {
		_, err := NormalizePod(PodSpec{LoRADir: dir})
		if err == nil {
			t.Errorf("LoRA dir %s accepted", dir)
		} else if !strings.Contains(err.Error(), "/workspace") {
			t.Errorf("%s: %v", dir, err)
		}
	}
	if _, err := NormalizePod(PodSpec{LoRADir: "/tmp/lora"}); err == nil || !strings.Contains(err.Error(), "lost") {
		t.Errorf("no reason: %v", err)
	}
	s, err := NormalizePod(PodSpec{LoRADir: "/workspace/loras/", Env: map[string]string{"FOO": "1"}})
	if err != nil || s.LoRADir != "/workspace/loras" || s.Image != DefaultImage {
		t.Fatalf("%+v %v", s, err)
	}
	for _, bad := range []PodSpec{
		{Env: map[string]string{"SCOPE_LORA_DIR": "/x"}},
		{Env: map[string]string{provider.EnvRequestID: "x"}},
		{Image: "bad image"},
		{SecretEnv: map[string]secret.Secret{"HF_TOKEN": secret.New("")}},
	} {
		if _, err := NormalizePod(bad); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

func TestPodCreateSpec(t *testing.T) {
	tok := secret.New("hf_" + "PODSPECTOKEN000000000000000")
	s, err := NormalizePod(PodSpec{Env: map[string]string{"FOO": "bar"}, SecretEnv: map[string]secret.Secret{"HF_TOKEN": tok}})
	if err != nil {
		t.Fatal(err)
	}
	c := s.CreateSpec(provider.CreateSpec{GPUType: "G", Ports: []string{"22/tcp"}})
	want := map[string]string{"DAYDREAM_SCOPE_MODELS_DIR": "/workspace/models", "DAYDREAM_SCOPE_LOGS_DIR": "/workspace/logs",
		"DAYDREAM_SCOPE_LORA_DIR": "/workspace/models/lora", "SCOPE_LORA_DIR": "/workspace/models/lora", "FOO": "bar"}
	for k, v := range want {
		if c.Env[k] != v {
			t.Errorf("env %s = %q, want %q", k, c.Env[k], v)
		}
	}
	if len(c.Env) != len(want) || c.SecretEnv["HF_TOKEN"] != tok || c.Image != DefaultImage || c.VolumeGB != 50 ||
		strings.Join(c.Ports, ",") != "22/tcp,8000/http" || c.GPUType != "G" {
		t.Fatalf("%+v", c)
	}
	if c := s.CreateSpec(provider.CreateSpec{NetworkVolumeID: "vol1"}); c.VolumeGB != 0 {
		t.Fatal("a network volume and a pod volume")
	}
}

func TestApplyPod(t *testing.T) {
	srv, c := podFake(t, nil)
	tok := secret.New("hf_" + "APPLYPODTOKEN00000000000000")
	spec := PodSpec{SecretEnv: map[string]secret.Secret{"HF_TOKEN": tok}, GPUs: 1}
	ns, _ := NormalizePod(spec)
	pod, err := c.Create(ctxFor(t), ns.CreateSpec(provider.CreateSpec{GPUType: "NVIDIA GeForce RTX 4090", RequestID: "scapply1"}))
	if err != nil {
		t.Fatal(err)
	}
	steps, _, err := ApplyPod(ctxFor(t), c, pod.ID, spec, false)
	if err != nil || len(steps) != 1 || steps[0].Action != "keep" || srv.Count("PATCH /pods/{id}") != 0 {
		t.Fatalf("fresh pod: %v %v", steps, err)
	}
	spec.Image = "daydreamlive/scope:v2"
	steps, _, err = ApplyPod(ctxFor(t), c, pod.ID, spec, true)
	if err != nil || len(steps) != 1 || steps[0].Action != "update" || srv.Count("PATCH /pods/{id}") != 0 {
		t.Fatalf("dry run: %v %v", steps, err)
	}
	if !strings.Contains(steps[0].Reason, "image: daydreamlive/scope:main → daydreamlive/scope:v2") {
		t.Fatalf("reason: %s", steps[0].Reason)
	}
	if _, _, err = ApplyPod(ctxFor(t), c, pod.ID, spec, false); err != nil || srv.Pods()[0].Image != spec.Image {
		t.Fatalf("update: %v", err)
	}
	if steps, _, _ := ApplyPod(ctxFor(t), c, pod.ID, spec, false); steps[0].Action != "keep" {
		t.Fatalf("second apply: %v", steps)
	}
	// Stopped: started (and a changed secret updated first), never leaking the token.
	c.Stop(ctxFor(t), pod.ID)
	tok2 := secret.New("hf_" + "APPLYPODTOKEN22222222222222")
	spec.SecretEnv = map[string]secret.Secret{"HF_TOKEN": tok2}
	steps, _, err = ApplyPod(ctxFor(t), c, pod.ID, spec, false)
	if err != nil || len(steps) != 2 || steps[0].Action != "update" || steps[1].Action != "start" {
		t.Fatalf("stopped pod: %v %v", steps, err)
	}
	for _, st := range steps {
		if strings.Contains(st.Reason, tok.Reveal()) || strings.Contains(st.Reason, tok2.Reveal()) {
			t.Fatalf("token in a step: %s", st.Reason)
		}
	}
	if p, err := WaitPod(ctxFor(t), c, pod.ID, true, 5*time.Second); err != nil || p.Status != provider.StatusRunning {
		t.Fatalf("wait: %v %v", p, err)
	}
	if v := srv.Pods()[0]; v.Env["HF_TOKEN"] != tok2.Reveal() {
		t.Fatal("secret not updated")
	}
	c.Terminate(ctxFor(t), pod.ID)
	if _, _, err := ApplyPod(ctxFor(t), c, pod.ID, spec, false); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("terminated pod: %v", err)
	}
}

func TestWaitPodNeverReady(t *testing.T) {
	_, c := podFake(t, func(runpodtest.PodView) (*runpodtest.Container, error) { return nil, errors.New("image pull failed") })
	ns, _ := NormalizePod(PodSpec{})
	pod, err := c.Create(ctxFor(t), ns.CreateSpec(provider.CreateSpec{GPUType: "NVIDIA GeForce RTX 4090", RequestID: "scwait1"}))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = WaitPod(ctxFor(t), c, pod.ID, false, 700*time.Millisecond)
	if !errors.Is(err, ErrPodNotReady) || !strings.Contains(err.Error(), "CREATED") || time.Since(start) > 5*time.Second {
		t.Fatalf("%v after %s", err, time.Since(start))
	}
	c.Stop(ctxFor(t), pod.ID)
	if _, err := WaitPod(ctxFor(t), c, pod.ID, false, 5*time.Second); err == nil || !strings.Contains(err.Error(), "EXITED") {
		t.Fatalf("stopped pod: %v", err)
	}
}
