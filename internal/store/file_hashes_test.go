package store

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// File hashes: recorded, replaced, read back with an inode above 2^63, forgotten.
func TestFileHashes(t *testing.T) {
	s, p := newStore(t)
	ctx := context.Background()
	if _, err := s.GetFileHash(ctx, "/nope"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	fh := FileHash{Path: "/scope/lora/a.safetensors", Size: 614_000_000, MtimeNs: 1_700_000_000_123_456_789, Inode: 1<<63 + 5, SHA256: strings.Repeat("A", 64)}
	if err := s.PutFileHash(ctx, fh); err != nil {
		t.Fatal(err)
	}
	fh.Size++
	if err := s.PutFileHash(ctx, fh); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, p)
	got, err := s.GetFileHash(ctx, "/scope/lora/./a.safetensors")
	if err != nil || got.Size != fh.Size || got.MtimeNs != fh.MtimeNs || got.Inode != fh.Inode || got.SHA256 != strings.Repeat("a", 64) ||
		time.Since(got.CheckedAt) > time.Minute {
		t.Fatalf("%+v %v", got, err)
	}
	for _, bad := range []FileHash{{Path: "rel/a", SHA256: fh.SHA256}, {Path: "/a", SHA256: "xyz"}} {
		if err := s.PutFileHash(ctx, bad); err == nil {
			t.Errorf("recorded %+v", bad)
		}
	}
	if err := s.DeleteFileHash(ctx, fh.Path); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetFileHash(ctx, fh.Path); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if err := s.DeleteFileHash(ctx, fh.Path); err != nil {
		t.Fatal(err)
	}
}

// An index written by the previous schema (5) keeps its LoRAs and gains file_hashes.
func TestMigrationFrom5(t *testing.T) {
	p := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", dsn(p))
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range migrations[:5] {
		if _, err := db.Exec(m); err != nil {
			t.Fatalf("step %d: %v", i+1, err)
		}
	}
	if _, err := db.Exec(`PRAGMA user_version = 5`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO loras (sha256, name, size, path, managed, family, base, rank, added_at)
		VALUES (?, 'old', 1, '/lib/old', 1, 'comfy', 'unknown', 4, '2026-01-01T00:00:00.000000000Z')`, shaOf("old")); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s := open(t, p)
	var v int
	if err := s.db.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != SchemaVersion() || v < 6 {
		t.Fatalf("user_version %d %v", v, err)
	}
	if l, err := s.GetLoRA(ctx, "old"); err != nil || l.SHA256 != shaOf("old") {
		t.Fatalf("%+v %v", l, err)
	}
	if err := s.PutFileHash(ctx, FileHash{Path: "/lib/old", Size: 1, SHA256: shaOf("old")}); err != nil {
		t.Fatal(err)
	}
}
