package hf

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/hub/hf/hftest"
	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// canary is a token that must never show up in an error.
const canary = "hf_CanaryTokenNeverPrintMe0123456789"

type fixture struct {
	srv    *hftest.Server
	files  []hftest.File
	commit string
	cache  string
}

func demo(t *testing.T, r hftest.Repo) *fixture {
	t.Helper()
	srv := hftest.Start(t, hftest.Options{PageSize: 2})
	files, err := hftest.DemoFiles()
	if err != nil {
		t.Fatal(err)
	}
	if r.ID == "" {
		r.ID = "daydream/demo-lora"
	}
	r.Files = files
	commit := srv.AddRepo(r)
	srv.AddToken(canary, true)
	return &fixture{srv: srv, files: files, commit: commit, cache: t.TempDir()}
}

func (fx *fixture) client() *Client {
	return &Client{
		Endpoint: fx.srv.URL(), Token: secret.New(canary),
		Connections: 4, ChunkSize: 64 << 10,
		RetryWait: time.Millisecond, StallTimeout: 2 * time.Second,
	}
}

func (fx *fixture) file(path string) hftest.File {
	for _, f := range fx.files {
		if f.Path == path {
			return f
		}
	}
	panic(path)
}

func etagOf(f hftest.File) string {
	if f.LFS {
		return hftest.SHA256(f.Data)
	}
	return hftest.GitBlobSHA1(f.Data)
}

const largePath = "checkpoints/step1000/lora_large.safetensors"

func noAuthAtCDN(t *testing.T, srv *hftest.Server) {
	srv.CDNHook = func(r *http.Request) {
		if a := r.Header.Get("Authorization"); a != "" {
			t.Errorf("CDN received Authorization %q", a)
		}
	}
}

func checkNoCanary(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
		if strings.Contains(s, canary) {
			t.Fatalf("token leaked in error: %s", s)
		}
	}
}

// walk lists every path under dir (slash-separated, relative), with symlink targets.
func walk(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			tgt, _ := os.Readlink(p)
			out[rel] = "-> " + tgt
		case d.IsDir():
			out[rel] = "dir"
		default:
			out[rel] = "file"
		}
		return nil
	})
	return out
}

func TestPullLayout(t *testing.T) {
	fx := demo(t, hftest.Repo{})
	noAuthAtCDN(t, fx.srv)
	c := fx.client()
	got, err := c.Pull(context.Background(), fx.cache, Ref{Repo: "daydream/demo-lora"}, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("got %d files", len(got))
	}
	repo := filepath.Join(fx.cache, "models--daydream--demo-lora")
	ref, err := os.ReadFile(filepath.Join(repo, "refs", "main"))
	if err != nil || string(ref) != fx.commit {
		t.Fatalf("refs/main = %q, %v; want %s with no newline", ref, err, fx.commit)
	}
	for _, g := range got {
		f := fx.file(g.Path)
		etag := etagOf(f)
		if !g.Downloaded || g.Commit != fx.commit || g.Etag != etag || g.Size != int64(len(f.Data)) {
			t.Errorf("%+v", g)
		}
		if f.LFS != (g.SHA256 != "") || f.LFS && g.SHA256 != hftest.SHA256(f.Data) {
			t.Errorf("%s: SHA256 %q", g.Path, g.SHA256)
		}
		wantPtr := filepath.Join(repo, "snapshots", fx.commit, filepath.FromSlash(f.Path))
		if g.CachePath != wantPtr || g.BlobPath != filepath.Join(repo, "blobs", etag) {
			t.Errorf("paths %s %s", g.CachePath, g.BlobPath)
		}
		tgt, err := os.Readlink(wantPtr)
		if err != nil {
			t.Fatal(err)
		}
		wantTgt := strings.Repeat("../", 2+strings.Count(f.Path, "/")) + "blobs/" + etag
		if filepath.ToSlash(tgt) != wantTgt {
			t.Errorf("%s -> %s, want %s", f.Path, tgt, wantTgt)
		}
		data, err := os.ReadFile(wantPtr)
		if err != nil || string(data) != string(f.Data) {
			t.Errorf("%s: content differs (%v)", f.Path, err)
		}
		if fi, err := os.Lstat(g.BlobPath); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("blob %s: %v", g.BlobPath, err)
		}
	}
	// the exact tree: nothing else, no leftovers
	want := map[string]string{
		"CACHEDIR.TAG":                                                                 "file",
		".locks":                                                                       "dir",
		".locks/models--daydream--demo-lora":                                           "dir",
		"models--daydream--demo-lora":                                                  "dir",
		"models--daydream--demo-lora/blobs":                                            "dir",
		"models--daydream--demo-lora/refs":                                             "dir",
		"models--daydream--demo-lora/refs/main":                                        "file",
		"models--daydream--demo-lora/trees":                                            "dir",
		"models--daydream--demo-lora/trees/" + fx.commit + ".json":                     "file",
		"models--daydream--demo-lora/snapshots":                                        "dir",
		"models--daydream--demo-lora/snapshots/" + fx.commit:                           "dir",
		"models--daydream--demo-lora/snapshots/" + fx.commit + "/checkpoints":          "dir",
		"models--daydream--demo-lora/snapshots/" + fx.commit + "/checkpoints/step1000": "dir",
	}
	for _, f := range fx.files {
		e := etagOf(f)
		want["models--daydream--demo-lora/blobs/"+e] = "file"
		want[".locks/models--daydream--demo-lora/"+e+".lock"] = "file"
		want["models--daydream--demo-lora/snapshots/"+fx.commit+"/"+f.Path] = "-> " + strings.Repeat("../", 2+strings.Count(f.Path, "/")) + "blobs/" + e
	}
	have := walk(t, fx.cache)
	for k, v := range want {
		if have[k] != v {
			t.Errorf("%s: have %q want %q", k, have[k], v)
		}
	}
	for k, v := range have {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %s (%s)", k, v)
		}
	}
	tag, _ := os.ReadFile(filepath.Join(fx.cache, "CACHEDIR.TAG"))
	if !strings.HasPrefix(string(tag), "Signature: 8a477f597d28d172789f06886806bc55\n") {
		t.Errorf("CACHEDIR.TAG %q", tag)
	}
	var tc struct {
		FormatVersion int                       `json:"format_version"`
		Files         map[string]map[string]any `json:"files"`
	}
	data, _ := os.ReadFile(filepath.Join(repo, "trees", fx.commit+".json"))
	if err := json.Unmarshal(data, &tc); err != nil || tc.FormatVersion != 1 || len(tc.Files) != 3 {
		t.Errorf("tree cache %s: %v", data, err)
	}
	if e := tc.Files["lora.safetensors"]; e["lfs_sha256"] != hftest.SHA256(fx.file("lora.safetensors").Data) || e["blob_id"] == nil {
		t.Errorf("tree cache entry %v", e)
	}
	if _, ok := tc.Files["README.md"]["lfs_sha256"]; ok {
		t.Errorf("README has lfs_sha256 in the tree cache")
	}
	if fx.srv.CDNAuthSeen() != 0 {
		t.Errorf("CDN saw Authorization")
	}
	if fx.srv.Count("cdn") < 2 {
		t.Errorf("large file not fetched in ranges: %d CDN requests", fx.srv.Count("cdn"))
	}

	// second pull: nothing downloaded, no HEAD, no CDN request
	fx.srv.ResetCounts()
	again, err := c.Pull(context.Background(), fx.cache, Ref{Repo: "daydream/demo-lora"}, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range again {
		if g.Downloaded {
			t.Errorf("%s downloaded again", g.Path)
		}
	}
	if n := fx.srv.Count("head") + fx.srv.Count("get") + fx.srv.Count("cdn"); n != 0 {
		t.Errorf("second pull made %d file requests", n)
	}
	if len(again) != 3 {
		t.Errorf("second pull returned %d files", len(again))
	}
}

func TestIncludeExcludeAndPaths(t *testing.T) {
	fx := demo(t, hftest.Repo{})
	c := fx.client()
	paths := func(fs []File) []string {
		var out []string
		for _, f := range fs {
			out = append(out, f.Path)
		}
		sort.Strings(out)
		return out
	}
	cases := []struct {
		ref  string
		opt  PullOptions
		want string
	}{
		{"hf://daydream/demo-lora", PullOptions{Include: []string{"*.safetensors"}, Exclude: []string{"checkpoints/"}}, "lora.safetensors"},
		{"hf://daydream/demo-lora", PullOptions{Include: []string{"checkpoints/"}}, largePath},
		{"hf://daydream/demo-lora", PullOptions{Exclude: []string{"*.safetensors"}}, "README.md"},
		{"hf://daydream/demo-lora", PullOptions{Include: []string{"*.md", "lora.*"}}, "README.md lora.safetensors"},
		{"hf://daydream/demo-lora/checkpoints", PullOptions{}, largePath},
		{"hf://daydream/demo-lora@main/lora.safetensors", PullOptions{}, "lora.safetensors"},
		{"daydream/demo-lora/checkpoints/step1000/", PullOptions{}, largePath},
	}
	for _, tc := range cases {
		ref, err := ParseRef(tc.ref)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Pull(context.Background(), t.TempDir(), ref, tc.opt)
		if err != nil {
			t.Fatalf("%s %+v: %v", tc.ref, tc.opt, err)
		}
		if s := strings.Join(paths(got), " "); s != tc.want {
			t.Errorf("%s %+v: got %q want %q", tc.ref, tc.opt, s, tc.want)
		}
	}
	_, err := c.Pull(context.Background(), t.TempDir(), Ref{Repo: "daydream/demo-lora"}, PullOptions{Include: []string{"*.bin"}})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("no match: %v", err)
	}
}

func TestMissingPathWritesNoExist(t *testing.T) {
	fx := demo(t, hftest.Repo{})
	c := fx.client()
	ref, _ := ParseRef("hf://daydream/demo-lora/sub/nope.safetensors")
	_, err := c.Pull(context.Background(), fx.cache, ref, PullOptions{})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "sub/nope.safetensors") {
		t.Fatalf("err = %v", err)
	}
	repo := filepath.Join(fx.cache, "models--daydream--demo-lora")
	if fi, err := os.Stat(filepath.Join(repo, ".no_exist", fx.commit, "sub", "nope.safetensors")); err != nil || fi.Size() != 0 {
		t.Errorf(".no_exist marker: %v", err)
	}
	if ref, _ := os.ReadFile(filepath.Join(repo, "refs", "main")); string(ref) != fx.commit {
		t.Errorf("refs/main %q", ref)
	}
	if fi, err := os.Stat(filepath.Join(repo, "snapshots", fx.commit)); err != nil || !fi.IsDir() {
		t.Errorf("snapshot folder for the ref: %v", err)
	}
	_, err = c.Pull(context.Background(), fx.cache, Ref{Repo: "daydream/demo-lora", Paths: []string{"a.bin", "README.md", "b/c.bin"}}, PullOptions{})
	if !errors.Is(err, ErrNotFound) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "a.bin") || !strings.Contains(err.Error(), "b/c.bin") {
		t.Errorf("two missing paths: %q", err)
	}
	for _, p := range []string{"a.bin", "b/c.bin"} {
		if _, err := os.Stat(filepath.Join(repo, ".no_exist", fx.commit, filepath.FromSlash(p))); err != nil {
			t.Errorf("no marker for %s", p)
		}
	}
}

// cancelAfter cancels a context once n response-body bytes went through the transport.
type cancelAfter struct {
	rt     http.RoundTripper
	n      atomic.Int64
	limit  int64
	cancel func()
}

func (c *cancelAfter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(r)
	if err == nil {
		resp.Body = &countBody{ReadCloser: resp.Body, c: c}
	}
	return resp, err
}

type countBody struct {
	io.ReadCloser
	c *cancelAfter
}

func (b *countBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if b.c.n.Add(int64(n)) >= b.c.limit {
		b.c.cancel()
	}
	return n, err
}

func TestResumeAfterCancel(t *testing.T) {
	fx := demo(t, hftest.Repo{})
	large := fx.file(largePath)
	size := int64(len(large.Data))
	ref := Ref{Repo: "daydream/demo-lora", Paths: []string{largePath}}

	ctx, cancel := context.WithCancel(context.Background())
	c := fx.client()
	c.Connections = 2
	c.HTTP = &http.Client{Transport: &cancelAfter{rt: http.DefaultTransport.(*http.Transport).Clone(), limit: size * 2 / 5, cancel: cancel}}
	_, err := c.Pull(ctx, fx.cache, ref, PullOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("first pull: %v", err)
	}
	blobs := filepath.Join(fx.cache, "models--daydream--demo-lora", "blobs")
	inc := filepath.Join(blobs, hftest.SHA256(large.Data)+".incomplete")
	if _, err := os.Stat(inc); err != nil {
		t.Fatalf("no .incomplete left to resume: %v", err)
	}
	side, err := os.ReadFile(inc + ".chunks")
	if err != nil || strings.Count(string(side), "\n") < 2 {
		t.Fatalf("sidecar %q %v", side, err)
	}
	snap := filepath.Join(fx.cache, "models--daydream--demo-lora", "snapshots", fx.commit, filepath.FromSlash(largePath))
	if _, err := os.Lstat(snap); err == nil {
		t.Fatal("partial file visible in the snapshot")
	}
	// damage one recorded chunk: the resume must notice and fetch it again
	fh, _ := os.OpenFile(inc, os.O_RDWR, 0)
	fh.WriteAt([]byte{0xde, 0xad}, 10)
	fh.Close()
	first := fx.srv.CDNBytes(largePath)

	got, err := fx.client().Pull(context.Background(), fx.cache, ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got[0].Downloaded {
		t.Fatalf("%+v", got)
	}
	data, err := os.ReadFile(snap)
	if err != nil || string(data) != string(large.Data) {
		t.Fatal("resumed file differs")
	}
	total := fx.srv.CDNBytes(largePath)
	t.Logf("file %d bytes; first run %d, total %d", size, first, total)
	if total >= 2*size || total-first >= size {
		t.Errorf("resume fetched too much: %d bytes in all, %d in the second run, for a %d-byte file", total, total-first, size)
	}
	if _, err := os.Stat(inc); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf(".incomplete left: %v", err)
	}
	if _, err := os.Stat(inc + ".chunks"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("sidecar left: %v", err)
	}
}

func TestPrivateRepoTokenNeverReachesCDN(t *testing.T) {
	fx := demo(t, hftest.Repo{ID: "daydream/private", Private: true})
	noAuthAtCDN(t, fx.srv)
	got, err := fx.client().Pull(context.Background(), fx.cache, Ref{Repo: "daydream/private"}, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || fx.srv.Count("cdn") == 0 || fx.srv.CDNAuthSeen() != 0 {
		t.Fatalf("files %d, cdn requests %d, with auth %d", len(got), fx.srv.Count("cdn"), fx.srv.CDNAuthSeen())
	}
}

func TestAuthErrors(t *testing.T) {
	srv := hftest.Start(t, hftest.Options{})
	files, _ := hftest.DemoFiles()
	srv.AddRepo(hftest.Repo{ID: "o/private", Private: true, Files: files})
	srv.AddRepo(hftest.Repo{ID: "o/gated", Gated: true, Files: files})
	srv.AddRepo(hftest.Repo{ID: "o/gone", Files: files})
	srv.Remove("model", "o/gone")
	srv.AddRepo(hftest.Repo{ID: "o/public", Files: files})
	srv.AddToken(canary, false)
	const accepted = "hf_AcceptedGatedConditions0123456"
	srv.AddToken(accepted, true)
	const bogus = "hf_CanaryTokenNeverPrintMe_invalid99"

	cases := []struct {
		name, repo, rev, token string
		echo                   bool
		want                   error
		text                   string
	}{
		{"private no token", "o/private", "", "", false, ErrNotFound, "HF_TOKEN"},
		{"missing repo with token", "o/nothing", "", canary, false, ErrNotFound, "not found"},
		{"invalid token", "o/public", "", bogus, false, ErrAuth, "invalid or expired"},
		{"invalid token echoed", "o/public", "", bogus, true, ErrAuth, "401"},
		{"gated no token", "o/gated", "", "", false, ErrGated, "accept its conditions"},
		{"gated not accepted", "o/gated", "", canary, false, ErrGated, "not been granted"},
		{"gated not accepted echoed", "o/gated", "", canary, true, ErrGated, "gated"},
		{"removed", "o/gone", "", canary, false, ErrGone, "removed"},
		{"bad revision", "o/public", "v9", canary, false, ErrNotFound, `revision "v9"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv.EchoAuth(tc.echo)
			c := &Client{Endpoint: srv.URL(), Token: secret.New(tc.token), RetryWait: time.Millisecond}
			cache := t.TempDir()
			_, err := c.Pull(context.Background(), cache, Ref{Repo: tc.repo, Revision: tc.rev}, PullOptions{})
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("err = %v; want %v containing %q", err, tc.want, tc.text)
			}
			t.Log(err)
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("multi-line error %q", err)
			}
			checkNoCanary(t, err)
			if strings.Contains(err.Error(), bogus) {
				t.Fatalf("token leaked: %v", err)
			}
			snapshotFiles(t, cache, 0)
		})
	}
	srv.EchoAuth(false)
	c := &Client{Endpoint: srv.URL(), Token: secret.New(accepted), RetryWait: time.Millisecond}
	if _, err := c.Pull(context.Background(), t.TempDir(), Ref{Repo: "o/gated"}, PullOptions{}); err != nil {
		t.Fatalf("gated, accepted: %v", err)
	}
}

// snapshotFiles fails unless the cache's snapshots hold exactly n non-directory entries.
func snapshotFiles(t *testing.T, cache string, n int) {
	t.Helper()
	count := 0
	for k, v := range walk(t, cache) {
		if strings.Contains(k, "/snapshots/") && v != "dir" {
			count++
		}
	}
	if count != n {
		t.Errorf("snapshots hold %d files, want %d: %v", count, n, walk(t, cache))
	}
}

func TestHostileServers(t *testing.T) {
	type mode struct {
		name  string
		setup func(s *hftest.Server, large hftest.File)
		ref   Ref
		want  error
		text  string
	}
	large := Ref{Repo: "daydream/demo-lora", Paths: []string{largePath}}
	small := Ref{Repo: "daydream/demo-lora", Paths: []string{"lora.safetensors"}}
	modes := []mode{
		{"corrupt chunked", func(s *hftest.Server, _ hftest.File) { s.Corrupt(largePath) }, large, ErrIntegrity, "sha256 mismatch"},
		{"corrupt single GET", func(s *hftest.Server, _ hftest.File) { s.Corrupt("lora.safetensors") }, small, ErrIntegrity, "sha256 mismatch"},
		{"truncated chunked", func(s *hftest.Server, f hftest.File) { s.TruncateAt(largePath, int64(len(f.Data))/2+5) }, large, ErrRetry, "connection closed"},
		{"truncated single GET", func(s *hftest.Server, _ hftest.File) { s.TruncateAt("lora.safetensors", 1000) }, small, ErrRetry, "connection closed"},
		{"429 storm", func(s *hftest.Server, _ hftest.File) { s.RateLimit(1000) }, large, ErrRetry, "rate limited"},
		{"stalls forever", func(s *hftest.Server, f hftest.File) { s.StallAt(largePath, int64(len(f.Data))/3, 1000) }, large, ErrRetry, "nothing received"},
	}
	for _, name := range []string{"../evil", "/etc/passwd", `a\b`, "x\x01y", "a/../../b", "C:evil", "a//b", "./a", ""} {
		modes = append(modes, mode{
			name: fmt.Sprintf("tree name %q", name),
			setup: func(s *hftest.Server, _ hftest.File) {
				s.InjectTreeEntry("model", "daydream/demo-lora", map[string]any{"type": "file", "path": name, "oid": strings.Repeat("a", 40), "size": 3})
			},
			ref: Ref{Repo: "daydream/demo-lora"}, want: ErrUnsafe, text: "unsafe file name",
		})
	}
	modes = append(modes, mode{
		name: "bad lfs oid",
		setup: func(s *hftest.Server, _ hftest.File) {
			s.InjectTreeEntry("model", "daydream/demo-lora", map[string]any{"type": "file", "path": "x.bin", "oid": strings.Repeat("a", 40), "size": 3, "lfs": map[string]any{"oid": "../../x", "size": 3}})
		},
		ref: Ref{Repo: "daydream/demo-lora"}, want: ErrUnsafe, text: "bad LFS metadata",
	})
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			fx := demo(t, hftest.Repo{})
			m.setup(fx.srv, fx.file(largePath))
			c := fx.client()
			c.StallTimeout = 100 * time.Millisecond
			c.Retries = 3
			start := time.Now()
			_, err := c.Pull(context.Background(), fx.cache, m.ref, PullOptions{})
			if !errors.Is(err, m.want) || !strings.Contains(err.Error(), m.text) {
				t.Fatalf("err = %v; want %v containing %q", err, m.want, m.text)
			}
			t.Log(err)
			if strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "Signature=") {
				t.Errorf("error %q: multi-line or leaks the signed URL", err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v", d)
			}
			checkNoCanary(t, err)
			snapshotFiles(t, fx.cache, 0)
			for k := range walk(t, fx.cache) {
				if strings.HasSuffix(k, ".incomplete") && m.want == ErrIntegrity {
					t.Errorf("corrupt download kept: %s", k)
				}
				if strings.Contains(k, "/blobs/") && !strings.Contains(k, ".incomplete") {
					t.Errorf("blob kept: %s", k)
				}
			}
			if m.want == ErrUnsafe {
				if have := walk(t, fx.cache); len(have) != 0 {
					t.Errorf("wrote %v after refusing the listing", have)
				}
			}
		})
	}
}

func TestTransientFaultsRecover(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(s *hftest.Server, f hftest.File)
	}{
		{"429 burst", func(s *hftest.Server, _ hftest.File) { s.RateLimit(5) }},
		{"stall once", func(s *hftest.Server, f hftest.File) { s.StallAt(largePath, int64(len(f.Data))/3, 1) }},
		{"stall twice mid-chunk", func(s *hftest.Server, f hftest.File) { s.StallAt(largePath, 70<<10, 2) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := demo(t, hftest.Repo{})
			tc.setup(fx.srv, fx.file(largePath))
			c := fx.client()
			c.StallTimeout = 150 * time.Millisecond
			got, err := c.Pull(context.Background(), fx.cache, Ref{Repo: "daydream/demo-lora"}, PullOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range got {
				data, err := os.ReadFile(g.CachePath)
				if err != nil || string(data) != string(fx.file(g.Path).Data) {
					t.Errorf("%s differs", g.Path)
				}
			}
		})
	}
}

// TestIdleConnectionsShareASlowRange: a connection that crawls (a loss burst, a slow
// CDN node) does not hold up the end of a download: once nothing is queued, the idle
// connections take over the back half of its range, and the file is still exact.
func TestIdleConnectionsShareASlowRange(t *testing.T) {
	defer func(f int64) { minStealFloor = f }(minStealFloor)
	minStealFloor = 4 << 10
	fx := demo(t, hftest.Repo{})
	large := fx.file(largePath)
	size := int64(len(large.Data))
	c := fx.client()
	c.ChunkSize = size / 4
	// The last chunk crawls: 32 KiB every 40 ms.
	fx.srv.SlowAt(largePath, size-1, 40*time.Millisecond)
	got, err := c.Pull(context.Background(), fx.cache, Ref{Repo: "daydream/demo-lora", Paths: []string{largePath}}, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(got[0].CachePath); err != nil || !bytes.Equal(data, large.Data) {
		t.Fatalf("the file differs (%v)", err)
	}
	stolen := 0
	for _, rg := range fx.srv.Ranges(largePath) {
		var a, b int64
		if _, err := fmt.Sscanf(rg, "bytes=%d-%d", &a, &b); err == nil && a%c.ChunkSize != 0 {
			stolen++
		}
	}
	t.Logf("%d bytes, chunk %d, ranges %q", size, c.ChunkSize, fx.srv.Ranges(largePath))
	if stolen == 0 {
		t.Fatalf("no connection took over part of the slow range: %q", fx.srv.Ranges(largePath))
	}
	if n := fx.srv.CDNBytes(largePath); n > size+size/4 {
		t.Errorf("the CDN sent %d bytes for a %d-byte file", n, size)
	}
}

func TestRevisionsRefsAndCommits(t *testing.T) {
	fx := demo(t, hftest.Repo{})
	v1 := fx.srv.AddRevision("model", "daydream/demo-lora", "v1", fx.files[:1])
	c := fx.client()
	repo := filepath.Join(fx.cache, "models--daydream--demo-lora")
	got, err := c.Pull(context.Background(), fx.cache, Ref{Repo: "daydream/demo-lora", Revision: "v1"}, PullOptions{})
	if err != nil || len(got) != 1 || got[0].Commit != v1 {
		t.Fatalf("%+v %v", got, err)
	}
	if b, _ := os.ReadFile(filepath.Join(repo, "refs", "v1")); string(b) != v1 {
		t.Errorf("refs/v1 = %q", b)
	}
	// by commit: no ref written, snapshot under the commit
	got, err = c.Pull(context.Background(), fx.cache, Ref{Repo: "daydream/demo-lora", Revision: fx.commit}, PullOptions{})
	if err != nil || len(got) != 3 {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(repo, "refs", fx.commit)); err == nil {
		t.Error("a ref named after the commit")
	}
	if _, err := os.Stat(filepath.Join(repo, "refs", "main")); err == nil {
		t.Error("refs/main written by a pull by commit")
	}
	// README is shared between both commits: one blob
	blobs, _ := os.ReadDir(filepath.Join(repo, "blobs"))
	if len(blobs) != 3 {
		t.Errorf("%d blobs", len(blobs))
	}
}

func TestRenamedRepoFollowsRelativeRedirects(t *testing.T) {
	fx := demo(t, hftest.Repo{ID: "old/name"})
	fx.srv.Rename("model", "old/name", "new/name")
	got, err := fx.client().Pull(context.Background(), fx.cache, Ref{Repo: "old/name"}, PullOptions{})
	if err != nil || len(got) != 3 {
		t.Fatalf("%v %v", got, err)
	}
}

func TestDatasetFolder(t *testing.T) {
	fx := demo(t, hftest.Repo{ID: "o/ds", Type: "dataset"})
	ref, err := ParseRef("hf://datasets/o/ds")
	if err != nil {
		t.Fatal(err)
	}
	got, err := fx.client().Pull(context.Background(), fx.cache, ref, PullOptions{})
	if err != nil || len(got) != 3 {
		t.Fatal(err)
	}
	if !strings.Contains(got[0].CachePath, "datasets--o--ds") {
		t.Errorf("%s", got[0].CachePath)
	}
}

func TestTLSVerified(t *testing.T) {
	srv := hftest.Start(t, hftest.Options{TLS: true})
	files, _ := hftest.DemoFiles()
	srv.AddRepo(hftest.Repo{ID: "o/tls", Files: files})
	c := &Client{Endpoint: srv.URL(), RetryWait: time.Millisecond, Retries: 1, ChunkSize: 64 << 10}
	cache := t.TempDir()
	if _, err := c.Pull(context.Background(), cache, Ref{Repo: "o/tls"}, PullOptions{}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted certificate accepted: %v", err)
	}
	c.HTTP = srv.Client()
	if got, err := c.Pull(context.Background(), cache, Ref{Repo: "o/tls"}, PullOptions{}); err != nil || len(got) != 3 {
		t.Fatal(err)
	}
}

func TestDowngradeRedirectRefused(t *testing.T) {
	srv := hftest.Start(t, hftest.Options{TLS: true, PlainCDN: true})
	files, _ := hftest.DemoFiles()
	srv.AddRepo(hftest.Repo{ID: "o/x", Files: files})
	c := &Client{Endpoint: srv.URL(), HTTP: srv.Client(), RetryWait: time.Millisecond}
	cache := t.TempDir()
	_, err := c.Pull(context.Background(), cache, Ref{Repo: "o/x", Paths: []string{"lora.safetensors"}}, PullOptions{})
	if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "non-https") {
		t.Fatalf("err = %v", err)
	}
	t.Log(err)
	if srv.Count("cdn") != 0 {
		t.Error("the client went to the plain-http CDN")
	}
	snapshotFiles(t, cache, 0)
}

func TestProgressEvents(t *testing.T) {
	fx := demo(t, hftest.Repo{})
	var buf safeBuffer
	c := fx.client()
	c.Progress = progress.Reporter{Mode: progress.JSON, W: &buf}
	if _, err := c.Pull(context.Background(), fx.cache, Ref{Repo: "daydream/demo-lora"}, PullOptions{}); err != nil {
		t.Fatal(err)
	}
	done := map[string]int64{}
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var ev struct {
			Event, Op, Item string
			Done, Total     int64
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if ev.Event == "done" {
			if ev.Done != ev.Total || ev.Op != "download" {
				t.Errorf("%+v", ev)
			}
			done[ev.Item] = ev.Done
		}
	}
	for _, f := range fx.files {
		if done[f.Path] != int64(len(f.Data)) {
			t.Errorf("%s: done %d of %d", f.Path, done[f.Path], len(f.Data))
		}
	}
}

type safeBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *safeBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestConcurrentPullsShareBlobs(t *testing.T) {
	fx := demo(t, hftest.Repo{})
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = fx.client().Pull(context.Background(), fx.cache, Ref{Repo: "daydream/demo-lora"}, PullOptions{})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for k := range walk(t, fx.cache) {
		if strings.Contains(k, "incomplete") || strings.Contains(k, ".scopectl-tmp-") {
			t.Errorf("leftover %s", k)
		}
	}
	if n := fx.srv.CDNBytes(largePath); n != int64(len(fx.file(largePath).Data)) {
		t.Errorf("large file fetched %d bytes for %d (lock not honoured)", n, len(fx.file(largePath).Data))
	}
}

func TestEndpointAndRedirectPolicy(t *testing.T) {
	c := &Client{Endpoint: "http://example.com"}
	if _, err := c.Pull(context.Background(), t.TempDir(), Ref{Repo: "o/x"}, PullOptions{}); err == nil || !strings.Contains(err.Error(), "https") {
		t.Errorf("plain-http endpoint accepted: %v", err)
	}
	p, err := (&Client{}).newPull(t.TempDir(), Ref{Repo: "o/x", RepoType: "model", Revision: "main"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.root.Close()
	for u, ok := range map[string]bool{
		"https://cdn-lfs.hf.co/x":          true,
		"http://cdn-lfs.hf.co/x":           false,
		"http://127.0.0.1:9/x":             false, // the endpoint is https
		"https://user:pw@cdn.example.com/": false,
		"ftp://x/y":                        false,
	} {
		pu, _ := p.ep.Parse(u)
		if err := p.allowedURL(pu); (err == nil) != ok {
			t.Errorf("%s: %v", u, err)
		}
	}
	// a redirect off the endpoint drops the token
	req, _ := http.NewRequest("GET", "https://cdn-lfs.hf.co/x", nil)
	req.Header.Set("Authorization", "Bearer x")
	via, _ := http.NewRequest("GET", "https://huggingface.co/o/x/resolve/main/a", nil)
	if err := p.checkRedirect(req, []*http.Request{via}); err != nil || req.Header.Get("Authorization") != "" {
		t.Errorf("redirect kept Authorization: %v", err)
	}
	req2, _ := http.NewRequest("GET", "https://huggingface.co/o/y", nil)
	req2.Header.Set("Authorization", "Bearer x")
	if err := p.checkRedirect(req2, []*http.Request{via, req}); err != nil || req2.Header.Get("Authorization") != "" {
		t.Errorf("redirect back to the Hub after the CDN regained Authorization")
	}
	if url := p.resolveURL("refs/pr/1", "a b/c#d.safetensors"); url != "https://huggingface.co/o/x/resolve/refs%2Fpr%2F1/a%20b/c%23d.safetensors" {
		t.Errorf("resolve URL %s", url)
	}
}

func TestTokenFrom(t *testing.T) {
	home := t.TempDir()
	if TokenFrom(secret.Secret{}, home).IsSet() {
		t.Error("token without a file")
	}
	os.WriteFile(filepath.Join(home, "token"), []byte("  hf_fromfile0123456789abcdef\n"), 0o600)
	if got := TokenFrom(secret.Secret{}, home).Reveal(); got != "hf_fromfile0123456789abcdef" {
		t.Errorf("file token %q", got)
	}
	if got := TokenFrom(secret.New("hf_env"), home).Reveal(); got != "hf_env" {
		t.Errorf("env token %q", got)
	}
}

func TestSymlinkTargetsResolveInsideCache(t *testing.T) {
	fx := demo(t, hftest.Repo{})
	got, err := fx.client().Pull(context.Background(), fx.cache, Ref{Repo: "daydream/demo-lora"}, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cacheReal, _ := filepath.EvalSymlinks(fx.cache)
	for _, g := range got {
		real, err := filepath.EvalSymlinks(g.CachePath)
		if err != nil || !strings.HasPrefix(real, cacheReal+string(filepath.Separator)) {
			t.Errorf("%s resolves to %s (%v)", g.CachePath, real, err)
		}
		sum := sha256.New()
		f, _ := os.Open(real)
		io.Copy(sum, f)
		f.Close()
		if g.SHA256 != "" && hex.EncodeToString(sum.Sum(nil)) != g.SHA256 {
			t.Errorf("%s: sha256 differs", g.Path)
		}
	}
}
