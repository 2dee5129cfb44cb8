package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestPods(t *testing.T) {
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	// The row exists before the provider answers.
	if err := s.PutPod(ctx, Pod{RequestID: "sc1", Provider: "runpod", Name: "scope", IdleStop: 30 * time.Minute, LastSeenStatus: "CREATING"}); err != nil {
		t.Fatal(err)
	}
	p, err := s.GetPod(ctx, "sc1")
	if err != nil || p.ID != "" || p.IdleStop != 30*time.Minute {
		t.Fatalf("%+v %v", p, err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	p.ID, p.LastSeenStatus, p.LastSeenAt = "pod123", "RUNNING", &now
	if err := s.PutPod(ctx, p); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetPod(ctx, "pod123"); err != nil || got.RequestID != "sc1" || !got.LastSeenAt.Equal(now) {
		t.Fatalf("%+v %v", got, err)
	}
	p.TerminatedAt = &now
	s.PutPod(ctx, p)
	s.PutPod(ctx, Pod{RequestID: "sc2", Provider: "runpod", Name: "b"})
	live, _ := s.ListPods(ctx, true)
	all, _ := s.ListPods(ctx, false)
	if len(live) != 1 || len(all) != 2 {
		t.Fatalf("live %d all %d", len(live), len(all))
	}
	// A machine scopectl reaches but did not rent: its address and GPU count.
	if err := s.PutPod(ctx, Pod{RequestID: "ssh-1", Provider: "ssh", ID: "ssh-1", Name: "box", Address: "ssh://me@box:22", GPUCount: 2, Container: "scope"}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetPod(ctx, "ssh-1"); err != nil || got.Address != "ssh://me@box:22" || got.GPUCount != 2 || got.Container != "scope" {
		t.Fatalf("%+v %v", got, err)
	}
	if _, err := s.GetPod(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
}
