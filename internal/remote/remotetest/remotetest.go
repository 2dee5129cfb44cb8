// Package remotetest is the conformance suite every remote backend runs against a real
// server of its kind (a folder, sshd, an S3 server, the agent, a croc relay), so that
// all backends keep the same promises: atomic publish, verified content, resumable
// uploads, names that cannot escape the folder.
package remotetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/remote"
)

// Options describe what a backend can do.
type Options struct {
	// Resumes: an interrupted Put leaves state that the next Put of the same content
	// continues from (PutResult.Resumed > 0).
	Resumes bool
	// Size of the big test file; default 3 MiB (enough for several chunks/parts).
	BigSize int
	// Peek, if set, lists every name in the remote folder including temporary files,
	// bypassing the backend (e.g. os.ReadDir of the folder sshd serves).
	Peek func(t *testing.T) []string
}

// Data returns deterministic content and its sha256.
func Data(n int, seed uint64) ([]byte, string) {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 7))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	s := sha256.Sum256(b)
	return b, hex.EncodeToString(s[:])
}

// Src makes a Source over b.
func Src(b []byte, sha string) remote.Source {
	return remote.Source{R: bytes.NewReader(b), Size: int64(len(b)), SHA256: sha}
}

// failingReaderAt fails every read past limit, like a sender that dies mid-upload.
type failingReaderAt struct {
	r     io.ReaderAt
	limit int64
}

var errInjected = errors.New("injected failure")

func (f failingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= f.limit {
		return 0, errInjected
	}
	if off+int64(len(p)) > f.limit {
		n, _ := f.r.ReadAt(p[:f.limit-off], off)
		return n, errInjected
	}
	return f.r.ReadAt(p, off)
}

// Run runs the suite. open returns a fresh, empty remote for each subtest.
func Run(t *testing.T, open func(t *testing.T) remote.Remote, opt Options) {
	if opt.BigSize == 0 {
		opt.BigSize = 3 << 20
	}
	ctx := context.Background()
	get := func(t *testing.T, r remote.Remote, name string, off int64) []byte {
		t.Helper()
		rc, err := r.Get(ctx, name, off)
		if err != nil {
			t.Fatalf("Get %s: %v", name, err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatalf("Get %s: %v", name, err)
		}
		return b
	}
	names := func(t *testing.T, r remote.Remote) []string {
		t.Helper()
		es, err := r.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, e.Name)
		}
		return out
	}

	t.Run("PutListGetDelete", func(t *testing.T) {
		r := open(t)
		defer r.Close()
		if s := r.String(); s == "" || strings.Contains(s, "password") {
			t.Fatalf("String() = %q", s)
		}
		if got := names(t, r); len(got) != 0 {
			t.Fatalf("fresh remote lists %v", got)
		}
		small, ss := Data(1000, 1)
		big, bs := Data(opt.BigSize, 2)
		var prog bytes.Buffer
		res, err := r.Put(ctx, "big.safetensors", Src(big, bs), remote.PutOptions{Progress: &prog})
		if err != nil {
			t.Fatal(err)
		}
		if res.Sent != int64(len(big)) || res.Resumed != 0 || prog.Len() != len(big) {
			t.Fatalf("PutResult %+v, progress %d bytes", res, prog.Len())
		}
		if _, err := r.Put(ctx, "small.safetensors", Src(small, ss), remote.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		es, err := r.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != 2 || es[0].Name != "big.safetensors" || es[0].Size != int64(len(big)) || es[1].Size != 1000 {
			t.Fatalf("List: %+v", es)
		}
		for _, e := range es {
			if e.SHA256 != "" && e.SHA256 != map[string]string{"big.safetensors": bs, "small.safetensors": ss}[e.Name] {
				t.Fatalf("List reports a wrong sha256 for %s", e.Name)
			}
		}
		if !bytes.Equal(get(t, r, "big.safetensors", 0), big) {
			t.Fatal("Get returned other bytes")
		}
		if !bytes.Equal(get(t, r, "big.safetensors", 12345), big[12345:]) {
			t.Fatal("Get from offset returned other bytes")
		}
		if h, ok := r.(remote.Hasher); ok {
			if got, err := h.Hash(ctx, "big.safetensors"); err != nil || got != bs {
				t.Fatalf("Hash: %s %v", got, err)
			}
		}
		// Overwrite with other content.
		if _, err := r.Put(ctx, "small.safetensors", Src(big[:5000], sha(big[:5000])), remote.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(get(t, r, "small.safetensors", 0), big[:5000]) {
			t.Fatal("overwrite not visible")
		}
		if err := r.Delete(ctx, "small.safetensors"); err != nil {
			t.Fatal(err)
		}
		if err := r.Delete(ctx, "small.safetensors"); !errors.Is(err, remote.ErrNotFound) {
			t.Fatalf("second Delete: %v", err)
		}
		if _, err := r.Get(ctx, "small.safetensors", 0); !errors.Is(err, remote.ErrNotFound) {
			t.Fatalf("Get of deleted: %v", err)
		}
		if got := names(t, r); len(got) != 1 {
			t.Fatalf("after delete: %v", got)
		}
	})

	t.Run("HashMismatchPublishesNothing", func(t *testing.T) {
		r := open(t)
		defer r.Close()
		b, _ := Data(70000, 3)
		_, wrong := Data(10, 4)
		_, err := r.Put(ctx, "x.safetensors", Src(b, wrong), remote.PutOptions{})
		if !errors.Is(err, remote.ErrHashMismatch) {
			t.Fatalf("Put with a wrong sha256: %v", err)
		}
		if got := names(t, r); len(got) != 0 {
			t.Fatalf("published after mismatch: %v", got)
		}
	})

	t.Run("BadNamesRefused", func(t *testing.T) {
		r := open(t)
		defer r.Close()
		b, s := Data(10, 5)
		for _, n := range []string{"../escape.safetensors", "a/b.safetensors", "..", "", "x\x1b[31m.safetensors", `c:\x`} {
			if _, err := r.Put(ctx, n, Src(b, s), remote.PutOptions{}); !errors.Is(err, remote.ErrBadName) {
				t.Errorf("Put %q: %v", n, err)
			}
			if _, err := r.Get(ctx, n, 0); !errors.Is(err, remote.ErrBadName) {
				t.Errorf("Get %q: %v", n, err)
			}
			if err := r.Delete(ctx, n); !errors.Is(err, remote.ErrBadName) {
				t.Errorf("Delete %q: %v", n, err)
			}
		}
		if opt.Peek != nil {
			for _, n := range opt.Peek(t) {
				if strings.Contains(n, "escape") {
					t.Fatalf("file written outside the folder: %s", n)
				}
			}
		}
	})

	t.Run("InterruptedPutResumesAndNeverPublishesPartial", func(t *testing.T) {
		r := open(t)
		defer r.Close()
		b, s := Data(opt.BigSize, 6)
		cut := int64(len(b)) * 2 / 3
		_, err := r.Put(ctx, "lora.safetensors", remote.Source{R: failingReaderAt{bytes.NewReader(b), cut}, Size: int64(len(b)), SHA256: s}, remote.PutOptions{})
		if err == nil {
			t.Fatal("Put with a failing source succeeded")
		}
		if got := names(t, r); len(got) != 0 {
			t.Fatalf("partial upload visible: %v", got)
		}
		if opt.Peek != nil {
			for _, n := range opt.Peek(t) {
				if strings.HasSuffix(n, ".safetensors") || strings.HasSuffix(n, ".json") {
					t.Fatalf("temporary name %q would be seen by Scope", n)
				}
			}
		}
		res, err := r.Put(ctx, "lora.safetensors", Src(b, s), remote.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if opt.Resumes && (res.Resumed == 0 || res.Sent+res.Resumed != int64(len(b))) {
			t.Fatalf("did not resume: %+v", res)
		}
		if !bytes.Equal(get(t, r, "lora.safetensors", 0), b) {
			t.Fatal("resumed upload differs")
		}
	})

	t.Run("CancelStops", func(t *testing.T) {
		r := open(t)
		defer r.Close()
		b, s := Data(opt.BigSize, 8)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		done := make(chan error, 1)
		go func() { _, err := r.Put(cctx, "c.safetensors", Src(b, s), remote.PutOptions{}); done <- err }()
		select {
		case err := <-done:
			if err == nil {
				// A backend may finish a tiny upload before noticing; it must then be complete.
				if !bytes.Equal(get(t, r, "c.safetensors", 0), b) {
					t.Fatal("cancelled Put published other bytes")
				}
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Put ignored a cancelled context for 30 s")
		}
	})
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
