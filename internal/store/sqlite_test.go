package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

var ctx = context.Background()

func shaOf(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func open(t *testing.T, p string) *SQLite {
	t.Helper()
	s, err := OpenSQLite(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newStore(t *testing.T) (*SQLite, string) {
	p := filepath.Join(t.TempDir(), "sub dir?x", "index.db")
	return open(t, p), p
}

func lora(name, base, family string) LoRA {
	return LoRA{SHA256: shaOf(name), Name: name, Size: 100, Path: "/lib/" + name, Managed: true,
		Family: family, Base: base, Rank: 32,
		Origins: []Origin{{Kind: "local", Path: "/src/" + name}}}
}

func TestMigrationFromEmpty(t *testing.T) {
	s, p := newStore(t)
	var v int
	if err := s.db.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != SchemaVersion() {
		t.Fatalf("user_version %d %v", v, err)
	}
	var jm string
	s.db.QueryRow("PRAGMA journal_mode").Scan(&jm)
	var fk int
	s.db.QueryRow("PRAGMA foreign_keys").Scan(&fk)
	if jm != "wal" || fk != 1 {
		t.Fatalf("journal_mode %s foreign_keys %d", jm, fk)
	}
	if s.Path() != p {
		t.Fatalf("path %s", s.Path())
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("database not at its path: %v", err)
	}
	// Reopen is a no-op migration.
	s.Close()
	open(t, p)
}

func TestCRUDAndReopen(t *testing.T) {
	s, p := newStore(t)
	l := lora("pixar", "wan2.1-t2v-14b", "diffusers")
	l.Info = json.RawMessage(`{"keys": 400, "alpha": null}`)
	l.AddedAt = time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))
	if err := s.AddLoRA(ctx, l); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetBySHA(ctx, strings.ToUpper(l.SHA256))
	if err != nil {
		t.Fatal(err)
	}
	if !got.AddedAt.Equal(l.AddedAt) || got.AddedAt.Location() != time.UTC || got.VerifiedAt != nil {
		t.Fatalf("times %v %v", got.AddedAt, got.VerifiedAt)
	}
	l.AddedAt = got.AddedAt
	if !reflect.DeepEqual(got, l) {
		t.Fatalf("got %+v\nwant %+v", got, l)
	}

	// Update.
	vt := time.Now().UTC()
	got.Name, got.Path, got.Managed, got.Base, got.Family, got.Rank, got.VerifiedAt = "pixar2", "/elsewhere", false, "unknown", "kohya", 8, &vt
	got.Info = nil
	if err := s.UpdateLoRA(ctx, got); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = open(t, p)
	g2, err := s.GetLoRA(ctx, "pixar2")
	if err != nil {
		t.Fatal(err)
	}
	if g2.Path != "/elsewhere" || g2.Managed || g2.Rank != 8 || g2.Info != nil || g2.VerifiedAt == nil || !g2.VerifiedAt.Equal(vt) || len(g2.Origins) != 1 {
		t.Fatalf("after reopen %+v", g2)
	}
	if _, err := s.GetLoRA(ctx, "pixar"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if err := s.UpdateLoRA(ctx, lora("absent", "", "")); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}

	// Delete.
	if err := s.DeleteLoRA(ctx, g2.SHA256); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteLoRA(ctx, g2.SHA256); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := s.GetBySHA(ctx, g2.SHA256); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if err := s.AddLoRA(ctx, LoRA{SHA256: "xyz", Name: "n"}); err == nil {
		t.Fatal("bad sha accepted")
	}
	bad := lora("badinfo", "", "")
	bad.Info = json.RawMessage(`{`)
	if err := s.AddLoRA(ctx, bad); err == nil {
		t.Fatal("bad info accepted")
	}
}

func TestNameUniqueness(t *testing.T) {
	s, _ := newStore(t)
	a, b := lora("a", "", ""), lora("b", "", "")
	if err := s.AddLoRA(ctx, a); err != nil {
		t.Fatal(err)
	}
	dupSHA := a
	dupSHA.Name = "other"
	if err := s.AddLoRA(ctx, dupSHA); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), a.SHA256) {
		t.Fatalf("dup sha: %v", err)
	}
	dupName := b
	dupName.Name = "a"
	if err := s.AddLoRA(ctx, dupName); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), `"a"`) {
		t.Fatalf("dup name: %v", err)
	}
	// Case-sensitive.
	caseName := b
	caseName.Name = "A"
	if err := s.AddLoRA(ctx, caseName); err != nil {
		t.Fatal(err)
	}
	// Rename onto an existing name fails; renaming to itself is fine.
	caseName.Name = "a"
	if err := s.UpdateLoRA(ctx, caseName); !errors.Is(err, ErrExists) {
		t.Fatal(err)
	}
	if err := s.UpdateLoRA(ctx, a); err != nil {
		t.Fatal(err)
	}
}

func TestPrefixLookup(t *testing.T) {
	s, _ := newStore(t)
	// Craft SHAs sharing prefixes.
	mk := func(name, sha string) {
		l := lora(name, "", "")
		l.SHA256 = sha
		if err := s.AddLoRA(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	pad := func(p string) string { return p + strings.Repeat("0", 64-len(p)) }
	mk("one", pad("abcdef1"))
	mk("two", pad("abcdef2"))
	mk("three", pad("123456"))
	mk("abcdef", pad("ffffff")) // a name that looks like a prefix wins

	if l, err := s.GetLoRA(ctx, "123456"); err != nil || l.Name != "three" {
		t.Fatalf("%v %v", l.Name, err)
	}
	if l, err := s.GetLoRA(ctx, "ABCDEF1"); err != nil || l.Name != "one" || len(l.Origins) != 1 {
		t.Fatalf("%v %v", l.Name, err)
	}
	if l, err := s.GetLoRA(ctx, pad("abcdef2")); err != nil || l.Name != "two" {
		t.Fatalf("%v %v", l.Name, err)
	}
	if l, err := s.GetLoRA(ctx, "abcdef"); err != nil || l.Name != "abcdef" {
		t.Fatalf("name should win: %v %v", l.Name, err)
	}
	_, err := s.GetLoRA(ctx, "abcde0"[:5]+"f0")
	if !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	// Ambiguous: need a prefix with no name collision.
	mk("four", pad("9999991"))
	mk("five", pad("9999992"))
	_, err = s.GetLoRA(ctx, "999999")
	if !errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), "four") || !strings.Contains(err.Error(), "five") {
		t.Fatalf("ambiguous: %v", err)
	}
	_, err = s.GetLoRA(ctx, "12345")
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "at least 6") {
		t.Fatalf("too short: %v", err)
	}
	for _, ref := range []string{"", "nothex!", "777777", strings.Repeat("a", 65)} {
		if _, err := s.GetLoRA(ctx, ref); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%q: %v", ref, err)
		}
	}
}

func TestListFilter(t *testing.T) {
	s, _ := newStore(t)
	for _, l := range []LoRA{
		lora("zeta-style", "wan2.1-t2v-14b", "diffusers"),
		lora("Alpha-Style", "wan2.1-t2v-1.3b", "kohya"),
		lora("beta", "wan2.1-t2v-1.3b", "comfy"),
		lora("gamma-style", "wan2.1-t2v-1.3b", "kohya"),
	} {
		if err := s.AddLoRA(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	s.AddOrigin(ctx, shaOf("beta"), Origin{Kind: "huggingface", Repo: "r/b", File: "b.safetensors"})
	names := func(f Filter) []string {
		ls, err := s.ListLoRAs(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		out := []string{}
		for _, l := range ls {
			out = append(out, l.Name)
			if l.Origins == nil || l.Origins[0].Path != "/src/"+l.Name {
				t.Fatalf("origins of %s: %v", l.Name, l.Origins)
			}
			if l.Name == "beta" && len(l.Origins) != 2 {
				t.Fatalf("beta origins %v", l.Origins)
			}
		}
		return out
	}
	for _, c := range []struct {
		f    Filter
		want []string
	}{
		{Filter{}, []string{"Alpha-Style", "beta", "gamma-style", "zeta-style"}},
		{Filter{Base: "wan2.1-t2v-1.3b"}, []string{"Alpha-Style", "beta", "gamma-style"}},
		{Filter{Base: "wan2.1-t2v-1.3b", Family: "kohya"}, []string{"Alpha-Style", "gamma-style"}},
		{Filter{Family: "diffusers"}, []string{"zeta-style"}},
		{Filter{Name: "style"}, []string{"Alpha-Style", "gamma-style", "zeta-style"}},
		{Filter{Name: "*-style"}, []string{"gamma-style", "zeta-style"}},
		{Filter{Name: "?eta*"}, []string{"beta", "zeta-style"}},
		{Filter{Name: "nomatch"}, []string{}},
		{Filter{Base: "wan2.1-i2v-14b"}, []string{}},
	} {
		if got := names(c.f); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%+v: got %v want %v", c.f, got, c.want)
		}
	}
	if _, err := s.ListLoRAs(ctx, Filter{Name: "[a"}); err == nil {
		t.Fatal("bad pattern accepted")
	}
}

func TestOriginsDedupeOrderCascade(t *testing.T) {
	s, _ := newStore(t)
	l := lora("x", "", "")
	l.Origins = append(l.Origins, l.Origins[0]) // duplicate in input
	if err := s.AddLoRA(ctx, l); err != nil {
		t.Fatal(err)
	}
	hf := Origin{Kind: "huggingface", Repo: "Remade-AI/Pixar", Revision: "main", Commit: "abc", File: "p.safetensors"}
	cv := Origin{Kind: "civitai", ModelID: "1", VersionID: "2", URL: "https://civitai.com/api/download/models/2"}
	tr := Origin{Kind: "training", Job: "j1", Step: 500, Path: "/out/j1/500.safetensors"}
	for _, o := range []Origin{hf, cv, hf, tr, cv} {
		if err := s.AddOrigin(ctx, l.SHA256, o); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := s.GetLoRA(ctx, "x")
	want := []Origin{l.Origins[0], hf, cv, tr}
	if !reflect.DeepEqual(got.Origins, want) {
		t.Fatalf("origins %+v", got.Origins)
	}
	if err := s.AddOrigin(ctx, shaOf("nope"), hf); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if err := s.DeleteLoRA(ctx, l.SHA256); err != nil {
		t.Fatal(err)
	}
	var n int
	s.db.QueryRow("SELECT COUNT(*) FROM origins").Scan(&n)
	if n != 0 {
		t.Fatalf("%d origins left after delete", n)
	}
}

func TestInstalls(t *testing.T) {
	s, _ := newStore(t)
	at := time.Date(2026, 5, 6, 7, 8, 9, 10, time.UTC)
	a := Install{Dir: "/scope/lora/", File: "a.safetensors", Name: "a", SourceSHA256: shaOf("a"), SHA256: shaOf("a2"),
		Size: 10, Form: "comfy", Pipeline: "longlive", InstalledAt: at}
	b := Install{Dir: "/other", File: "sub/b.safetensors", Name: "b", SourceSHA256: shaOf("b"), SHA256: shaOf("b"), Size: 3, Form: "original"}
	for _, in := range []Install{a, b} {
		if err := s.PutInstall(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	all, err := s.ListInstalls(ctx, "")
	if err != nil || len(all) != 2 || all[0].Dir != "/other" || all[1].Dir != "/scope/lora" {
		t.Fatalf("%+v %v", all, err)
	}
	if all[0].InstalledAt.IsZero() {
		t.Fatal("InstalledAt not defaulted")
	}
	a.Dir = "/scope/lora"
	if !reflect.DeepEqual(all[1], a) {
		t.Fatalf("got %+v want %+v", all[1], a)
	}
	// Upsert.
	a.Form, a.Size, a.Pipeline = "diffusers", 11, ""
	if err := s.PutInstall(ctx, a); err != nil {
		t.Fatal(err)
	}
	in, _ := s.ListInstalls(ctx, "/scope/lora")
	if len(in) != 1 || in[0].Form != "diffusers" || in[0].Size != 11 || in[0].Pipeline != "" {
		t.Fatalf("%+v", in)
	}
	if err := s.DeleteInstall(ctx, "/scope/lora", "a.safetensors"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteInstall(ctx, "/scope/lora", "a.safetensors"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if in, _ := s.ListInstalls(ctx, "/scope/lora"); len(in) != 0 {
		t.Fatalf("%+v", in)
	}
	if err := s.PutInstall(ctx, Install{File: "x"}); err == nil {
		t.Fatal("empty dir accepted")
	}
}

func TestRefuseNewerSchema(t *testing.T) {
	s, p := newStore(t)
	if _, err := s.db.Exec(fmt.Sprintf("PRAGMA user_version = %d", SchemaVersion()+3)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := OpenSQLite(p)
	want := fmt.Sprintf("was written by a newer scopectl (schema %d, this build knows %d)", SchemaVersion()+3, SchemaVersion())
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), p) {
		t.Fatalf("got %v", err)
	}
	// The file was not touched.
	db, _ := sql.Open("sqlite", dsn(p)) // p contains "?", so a URI is needed
	defer db.Close()
	var v int
	db.QueryRow("PRAGMA user_version").Scan(&v)
	if v != SchemaVersion()+3 {
		t.Fatalf("user_version changed to %d", v)
	}
}

func TestConcurrentHandles(t *testing.T) {
	_, p := newStore(t)
	h1, h2 := open(t, p), open(t, p)
	const each = 40
	var wg sync.WaitGroup
	errs := make(chan error, 4*each)
	for i, h := range []*SQLite{h1, h2, h1, h2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				name := fmt.Sprintf("w%d-%d", i, j)
				l := lora(name, "wan2.1-t2v-1.3b", "kohya")
				if err := h.AddLoRA(ctx, l); err != nil {
					errs <- err
					return
				}
				if err := h.AddOrigin(ctx, l.SHA256, Origin{Kind: "remote", URL: name}); err != nil {
					errs <- err
					return
				}
				if err := h.PutInstall(ctx, Install{Dir: "/d", File: fmt.Sprintf("f%d", j%5), Name: name, Form: "x"}); err != nil {
					errs <- err
					return
				}
				if _, err := h.ListLoRAs(ctx, Filter{Name: "w*"}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, h := range []*SQLite{h1, h2} {
		ls, err := h.ListLoRAs(ctx, Filter{})
		if err != nil || len(ls) != 4*each {
			t.Fatalf("%d %v", len(ls), err)
		}
		for _, l := range ls {
			if len(l.Origins) != 2 {
				t.Fatalf("%s origins %v", l.Name, l.Origins)
			}
		}
		in, _ := h.ListInstalls(ctx, "/d")
		if len(in) != 5 {
			t.Fatalf("installs %d", len(in))
		}
	}
	var ok string
	h1.db.QueryRow("PRAGMA integrity_check").Scan(&ok)
	if ok != "ok" {
		t.Fatal(ok)
	}
}
