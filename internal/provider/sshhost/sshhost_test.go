package sshhost

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/store"
)

func TestHostURL(t *testing.T) {
	for in, want := range map[string]string{
		"ssh://root@gpu-box":          "ssh://root@gpu-box:22",
		"ssh://me@10.0.0.7:2222/":     "ssh://me@10.0.0.7:2222",
		" ssh://me@[2001:db8::1]:22 ": "ssh://me@[2001:db8::1]:22",
	} {
		if got, err := HostURL(in); err != nil || got != want {
			t.Errorf("HostURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"gpu-box", "ssh://gpu-box", "ssh://me:pw@box", "ssh://me@box/workspace", "http://me@box", "ssh://me@box:0", "ssh://me@box?x=1"} {
		if got, err := HostURL(bad); err == nil || strings.Contains(err.Error(), "pw") {
			t.Errorf("HostURL(%q) = %q, %v", bad, got, err)
		}
	}
	a, b := ID("ssh://root@gpu-box:22"), ID("ssh://root@gpu-box:2222")
	if !strings.HasPrefix(a, "ssh-") || len(a) != 14 || a == b || a != ID("ssh://root@gpu-box:22") {
		t.Errorf("ID: %q %q", a, b)
	}
}

// A host that does not answer is not added; an unknown host is ErrNotFound; Update is
// deploy's.
func TestUnreachableAndUnknown(t *testing.T) {
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	p := &Provider{Store: st, Dial: func(ctx context.Context, u string) (Runner, error) {
		return nil, errors.New("dial tcp 127.0.0.1:1: connection refused")
	}}
	ctx := context.Background()
	if _, err := p.Create(ctx, provider.CreateSpec{Host: "ssh://root@127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("create unreachable: %v", err)
	}
	if pods, err := p.List(ctx); err != nil || len(pods) != 0 {
		t.Fatalf("list: %v %v", pods, err)
	}
	for _, err := range []error{p.Stop(ctx, "ssh-0000000000"), p.Terminate(ctx, "ssh-0000000000")} {
		if !errors.Is(err, provider.ErrNotFound) {
			t.Errorf("unknown host: %v", err)
		}
	}
	if _, err := p.Get(ctx, "ssh-0000000000"); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("get unknown: %v", err)
	}
	if _, err := p.Update(ctx, "ssh-0000000000", provider.UpdateSpec{}, true); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("update: %v", err)
	}
}
