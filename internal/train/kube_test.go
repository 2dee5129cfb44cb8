package train

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/remote"
	_ "github.com/daydreamlive/scopectl/internal/remote/agent"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// The workspace agent serves any folder under its root as an agent remote at
// /d/<escaped folder>, refuses folders outside it and requests without the token.
func TestWorkspaceAgent(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	os.Symlink(outside, filepath.Join(root, "escape"))
	tok := secret.New("0123456789abcdef0123456789abcdef")
	wa := &WorkspaceAgent{Root: root, Token: tok}
	srv := httptest.NewServer(wa)
	defer srv.Close()
	defer wa.Close()
	ctx := context.Background()
	env := remote.Env{Lookup: func(k string) secret.Secret { return tok }}
	open := func(dir string) remote.Remote {
		r, err := remote.Open(ctx, srv.URL+"/d/"+url.PathEscape(dir), env)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	dir := filepath.Join(root, ".scopectl", "jobs", "v1", "x")
	r := open(dir)
	body := []byte("spec")
	sum := sha256.Sum256(body)
	if _, err := r.Put(ctx, "spec.json", remote.Source{R: bytes.NewReader(body), Size: 4, SHA256: hex.EncodeToString(sum[:])}, remote.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "spec.json")); err != nil || string(b) != "spec" {
		t.Fatalf("put landed elsewhere: %v", err)
	}
	rc, err := r.Get(ctx, "spec.json", 1)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != "pec" {
		t.Fatalf("get from 1: %q", got)
	}
	if ents, err := open(root).List(ctx); err != nil || len(ents) != 0 {
		t.Fatalf("root list: %v %v", ents, err)
	}
	for _, bad := range []string{outside, filepath.Join(root, "escape"), filepath.Join(root, "..", "x"), "relative"} {
		if _, err := open(bad).List(ctx); err == nil {
			t.Errorf("%s: served", bad)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "..", "x")); err == nil {
		t.Error("a folder was made outside the root")
	}
	// No token: refused before any folder is made.
	resp, err := http.Get(srv.URL + "/d/" + url.PathEscape(filepath.Join(root, "made")) + "/v1/files")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
	if _, err := os.Stat(filepath.Join(root, "made")); err == nil {
		t.Fatal("an unauthorized request made a folder")
	}
	if resp, err := http.Get(srv.URL + "/v1/health"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("health: %v", err)
	}
}

// Hold ends on release, after linger once every job ended, and when no job started.
func TestHold(t *testing.T) {
	ws := t.TempDir()
	ctx := context.Background()
	// No job at all: the start timeout.
	if _, err := Hold(ctx, HoldOptions{Workspace: ws, Name: "j", StartTimeout: 300 * time.Millisecond, Poll: 50 * time.Millisecond}); err == nil ||
		!strings.Contains(err.Error(), "no training job started") {
		t.Fatalf("start timeout: %v", err)
	}
	// A job that ended, nobody releases: linger.
	dir := filepath.Join(ws, ".scopectl", "jobs", "a")
	os.MkdirAll(dir, 0o700)
	done := make(chan string, 1)
	go func() {
		p, _ := Hold(ctx, HoldOptions{Workspace: ws, Name: "j", Linger: 400 * time.Millisecond, Poll: 50 * time.Millisecond})
		done <- p
	}()
	time.Sleep(200 * time.Millisecond)
	writeJSON(filepath.Join(dir, StateFile), &State{JobID: "a", Phase: PhaseTraining, Started: time.Now()}, 0o600)
	select {
	case p := <-done:
		t.Fatalf("ended while a job ran: %s", p)
	case <-time.After(700 * time.Millisecond):
	}
	writeJSON(filepath.Join(dir, StateFile), &State{JobID: "a", Phase: PhaseFailed, Started: time.Now()}, 0o600)
	t0 := time.Now()
	select {
	case p := <-done:
		if p != PhaseFailed || time.Since(t0) < 350*time.Millisecond {
			t.Fatalf("linger: %s after %v", p, time.Since(t0))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("did not end after linger")
	}
	// Released.
	go func() {
		p, _ := Hold(ctx, HoldOptions{Workspace: ws, Name: "j", Linger: time.Hour, Poll: 50 * time.Millisecond})
		done <- p
	}()
	time.Sleep(200 * time.Millisecond)
	writeJSON(filepath.Join(dir, StateFile), &State{JobID: "a", Phase: PhaseDone, Started: time.Now()}, 0o600)
	os.MkdirAll(filepath.Join(ws, ReleaseDir), 0o755)
	os.WriteFile(filepath.Join(ws, ReleaseDir, ReleaseFile("j")), []byte("done\n"), 0o644)
	select {
	case p := <-done:
		if p != PhaseDone {
			t.Fatalf("released: %s", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("did not end on release")
	}
}
