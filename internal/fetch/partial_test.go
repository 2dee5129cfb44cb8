package fetch

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const hdr = "test-chunks 1 abc"

// start opens data and its sidecar in a fresh folder: a new download of size bytes.
func start(t *testing.T, dir string, size, chunk int64) (*os.Root, *os.File, *Partial) {
	t.Helper()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	f, err := root.OpenFile("data", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	p, err := Resume(root, f, "data", "side", hdr, size, chunk, nil)
	if err != nil {
		t.Fatal(err)
	}
	return root, f, p
}

func done(p *Partial) string {
	var b strings.Builder
	for i := range p.Chunks() {
		if p.Done(i) {
			b.WriteByte('x')
		} else {
			b.WriteByte('.')
		}
	}
	return b.String()
}

// Chunks written and recorded survive a restart; a damaged one, a torn line and a
// line for a chunk out of range do not; another download's sidecar is ignored.
func TestResume(t *testing.T) {
	dir := t.TempDir()
	content := bytes.Repeat([]byte("0123456789abcdef"), 40) // 640 bytes: 7 chunks of 100
	_, f, p := start(t, dir, int64(len(content)), 100)
	if p.Chunks() != 7 || done(p) != "......." || p.Have() != 0 {
		t.Fatalf("fresh: %d chunks, %s", p.Chunks(), done(p))
	}
	if fi, _ := f.Stat(); fi.Size() != int64(len(content)) {
		t.Fatalf("not grown: %d", fi.Size())
	}
	for _, i := range []int{0, 2, 3, 6} {
		s, e := p.Bounds(i)
		if _, err := f.WriteAt(content[s:e], s); err != nil {
			t.Fatal(err)
		}
		if i == 3 {
			sum := sha256.Sum256(content[s:e])
			if err := p.Record(i, sum[:]); err != nil {
				t.Fatal(err)
			}
		} else if err := p.Seal(i); err != nil {
			t.Fatal(err)
		}
	}
	p.Close()
	side := filepath.Join(dir, "side")
	af, _ := os.OpenFile(side, os.O_WRONLY|os.O_APPEND, 0)
	fmt.Fprintf(af, "9 %x\n5 12", sha256.Sum256(nil)) // out of range, torn
	af.Close()
	f.WriteAt([]byte("XX"), 210) // damage chunk 2

	_, f2, p2 := start(t, dir, int64(len(content)), 100)
	if done(p2) != "x..x..x" || p2.Have() != 240 {
		t.Fatalf("resumed: %s, %d bytes", done(p2), p2.Have())
	}
	b, _ := os.ReadFile(side)
	if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); len(lines) != 4 || lines[0] != hdr {
		t.Fatalf("sidecar rewritten as %q", b)
	}
	got := make([]byte, 100)
	f2.ReadAt(got, 300)
	if !bytes.Equal(got, content[300:400]) {
		t.Fatal("a kept chunk was overwritten")
	}
	p2.Close()

	// Another download under the same names: starts over.
	root, _ := os.OpenRoot(dir)
	defer root.Close()
	f3, _ := root.OpenFile("data", os.O_RDWR, 0)
	defer f3.Close()
	p3, err := Resume(root, f3, "data", "side", "test-chunks 1 other", int64(len(content)), 100, nil)
	if err != nil || done(p3) != "......." {
		t.Fatalf("foreign sidecar: %s %v", done(p3), err)
	}
	p3.Complete()
	if _, err := os.Stat(side); !os.IsNotExist(err) {
		t.Fatalf("sidecar left after Complete: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err != nil {
		t.Fatalf("Complete removed the data: %v", err)
	}
}

func TestDiscardAndShape(t *testing.T) {
	dir := t.TempDir()
	_, f, p := start(t, dir, 10, 4)
	if p.Chunks() != 3 {
		t.Fatalf("chunks %d", p.Chunks())
	}
	if s, e := p.Bounds(2); s != 8 || e != 10 {
		t.Fatalf("last chunk [%d, %d)", s, e)
	}
	p.Discard()
	if fi, _ := f.Stat(); fi.Size() != 0 {
		t.Fatal("data not emptied")
	}
	for _, n := range []string{"data", "side"} {
		if _, err := os.Stat(filepath.Join(dir, n)); !os.IsNotExist(err) {
			t.Errorf("%s left: %v", n, err)
		}
	}
	if err := p.Record(0, make([]byte, 32)); err == nil {
		t.Error("Record after Discard succeeded")
	}
	root, _ := os.OpenRoot(dir)
	defer root.Close()
	for _, bad := range []struct {
		size, chunk int64
		hdr         string
	}{{-1, 4, hdr}, {10, 0, hdr}, {10, 4, "two\nlines"}} {
		if _, err := Resume(root, f, "data", "side", bad.hdr, bad.size, bad.chunk, nil); err == nil {
			t.Errorf("Resume(%d, %d, %q) succeeded", bad.size, bad.chunk, bad.hdr)
		}
	}
}

// Whatever the sidecar holds, Resume neither fails nor panics, and keeps only chunks
// whose bytes hash as recorded.
func FuzzResume(f *testing.F) {
	f.Add([]byte(hdr + "\n0 " + fmt.Sprintf("%x", sha256.Sum256([]byte("abcd"))) + "\n1 zz\n"))
	f.Add([]byte(hdr + "\n-1 x\n99999999999999999999 " + strings.Repeat("0", 64)))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, side []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "data"), []byte("abcdefghij"), 0o644)
		os.WriteFile(filepath.Join(dir, "side"), side, 0o644)
		root, err := os.OpenRoot(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		fh, err := root.OpenFile("data", os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		p, err := Resume(root, fh, "data", "side", hdr, 10, 4, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		for i := range p.Chunks() {
			if p.Done(i) && i != 0 {
				t.Fatalf("chunk %d kept: only chunk 0 (abcd) can match", i)
			}
		}
	})
}
