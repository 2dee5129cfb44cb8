package train

import (
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/deploy"
	"github.com/daydreamlive/scopectl/internal/provider"
)

// A pod's LoRA folder is the one deploy recorded in its environment, else the default;
// a value that is no absolute path is named, not used.
func TestPodLoRADir(t *testing.T) {
	for _, c := range []struct {
		env       map[string]string
		want, err string
	}{
		{nil, deploy.DefaultLoRADir, ""},
		{map[string]string{"DAYDREAM_SCOPE_LORA_DIR": "/workspace/loras/"}, "/workspace/loras", ""},
		{map[string]string{"SCOPE_LORA_DIR": "/data/lora"}, "/data/lora", ""},
		{map[string]string{"DAYDREAM_SCOPE_LORA_DIR": "/a", "SCOPE_LORA_DIR": "/b"}, "/a", ""},
		{map[string]string{"DAYDREAM_SCOPE_LORA_DIR": "models/lora"}, "", `pod p1: env DAYDREAM_SCOPE_LORA_DIR is "models/lora"; want an absolute path`},
		{map[string]string{"SCOPE_LORA_DIR": provider.SecretValue}, "", "env SCOPE_LORA_DIR"},
	} {
		got, err := PodLoRADir(&provider.Pod{ID: "p1", Env: c.env})
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v: %q, %v; want error %q", c.env, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%v: %q, %v; want %q", c.env, got, err, c.want)
		}
	}
}

func TestSameJobLoRA(t *testing.T) {
	for _, c := range []struct {
		file, name string
		want       bool
	}{
		{"slime_000000250.safetensors", "slime_000000500", true},
		{"slime_000000250.scope.safetensors", "slime_000000500", true},
		{"slime.safetensors", "slime_000000500", true},
		{"slimeball_000000250.safetensors", "slime_000000500", false},
		{"style.safetensors", "slime_000000500", false},
		{"slime_v2.safetensors", "slime_v2", true},
	} {
		if got := SameJobLoRA(c.file, c.name); got != c.want {
			t.Errorf("SameJobLoRA(%q, %q) = %v", c.file, c.name, got)
		}
	}
}

// A target that is not a folder needs a pod resolver.
func TestIsPreviewFolder(t *testing.T) {
	for target, want := range map[string]bool{"ssh://root@h:22/workspace/models/lora": true, "/tmp/lora": true, ".": true, `C:\lora`: true, "abc123xyz": false, "my-pod": false} {
		if IsPreviewFolder(target) != want {
			t.Errorf("IsPreviewFolder(%q) != %v", target, want)
		}
	}
}
