package store

import (
	"context"
	"strings"
	"testing"
)

// Samples: one record per content; a later pull without a LoRA keeps the LoRA an earlier
// one named; listing by LoRA and in all.
func TestSamples(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	a := Sample{SHA256: strings.Repeat("a", 64), Name: "b.png", Size: 3, Path: "/lib/a.png", LoRA: strings.Repeat("1", 64), Origin: "ssh://pod/samples/b.png"}
	b := Sample{SHA256: strings.Repeat("B", 64), Name: "a.jpg", Size: 4, Path: "/lib/b.jpg"}
	for _, sm := range []Sample{a, b} {
		if err := s.PutSample(ctx, sm); err != nil {
			t.Fatal(err)
		}
	}
	again := a
	again.LoRA, again.Origin = "", "file:///elsewhere/b.png"
	if err := s.PutSample(ctx, again); err != nil {
		t.Fatal(err)
	}
	all, err := s.ListSamples(ctx, "")
	if err != nil || len(all) != 2 || all[0].Name != "a.jpg" || all[0].SHA256 != strings.Repeat("b", 64) {
		t.Fatalf("all: %+v %v", all, err)
	}
	mine, err := s.ListSamples(ctx, strings.Repeat("1", 64))
	if err != nil || len(mine) != 1 || mine[0].Origin != "file:///elsewhere/b.png" || mine[0].AddedAt.IsZero() {
		t.Fatalf("by LoRA: %+v %v", mine, err)
	}
	if err := s.PutSample(ctx, Sample{Name: "x.png"}); err == nil {
		t.Fatal("a sample without sha256 or path was recorded")
	}
}
