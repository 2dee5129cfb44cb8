package provider

import (
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/secret"
)

func TestRequestID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		id := NewRequestID()
		if err := CheckRequestID(id); err != nil || len(id) != 18 || seen[id] {
			t.Fatalf("%q: %v", id, err)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "a b", "a/b", "é", strings.Repeat("a", 65), "a\n"} {
		if CheckRequestID(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestMaskEnv(t *testing.T) {
	r := &secret.Redactor{}
	r.Add(secret.New("very-secret-value-123"))
	got := MaskEnv(map[string]string{
		"HF_TOKEN": "hf_x", "CIVITAI_API_KEY": "k", "PUBLIC_KEY": "ssh-ed25519 AAAA", "SSH_PUBLIC_KEY": "ssh-ed25519 AAAA",
		"MY_VAR": "x", "LISTED": "plain", EnvSecretNames: "LISTED", EnvRequestID: "sc1", "EMBED": "x-very-secret-value-123",
		"EMPTY_TOKEN": "", "EXTRA": "e",
	}, []string{"EXTRA"}, r)
	want := map[string]string{"HF_TOKEN": SecretValue, "CIVITAI_API_KEY": SecretValue, "PUBLIC_KEY": "ssh-ed25519 AAAA",
		"SSH_PUBLIC_KEY": "ssh-ed25519 AAAA", "MY_VAR": "x", "LISTED": SecretValue, EnvSecretNames: "LISTED",
		EnvRequestID: "sc1", "EMBED": SecretValue, "EMPTY_TOKEN": "", "EXTRA": SecretValue}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if MaskEnv(nil, nil, nil) != nil {
		t.Error("nil env")
	}
}

func TestSSH(t *testing.T) {
	p := &Pod{PublicIP: "1.2.3.4", Ports: map[string]int{"22/tcp": 2222}}
	if h, port, ok := p.SSH(); !ok || h != "1.2.3.4" || port != 2222 {
		t.Error(h, port, ok)
	}
	p.PublicIP = ""
	if _, _, ok := p.SSH(); ok {
		t.Error("no IP")
	}
}
