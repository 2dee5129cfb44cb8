package agent_test

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	agentsrv "github.com/daydreamlive/scopectl/internal/agent"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/remote/remotetest"
	"github.com/daydreamlive/scopectl/internal/secret"

	agentremote "github.com/daydreamlive/scopectl/internal/remote/agent"
)

const testToken = "agent-test-token-0123456789abcdef"

// agent is a real agent server on a loopback TLS listener.
type agent struct {
	dir    string
	srv    *agentsrv.Server
	ts     *httptest.Server
	caFile string
}

// startAgent serves dir; wrap, if set, sits between the listener and the agent.
func startAgent(t *testing.T, dir string, wrap func(http.Handler) http.Handler) *agent {
	t.Helper()
	a := &agent{dir: dir, srv: &agentsrv.Server{Dir: dir, Token: secret.New(testToken)}}
	var h http.Handler = a.srv
	if wrap != nil {
		h = wrap(h)
	}
	a.ts = httptest.NewUnstartedServer(h)
	hs := a.srv.HTTPServer()
	a.ts.Config.ReadHeaderTimeout = hs.ReadHeaderTimeout
	a.ts.Config.ReadTimeout = hs.ReadTimeout
	a.ts.Config.IdleTimeout = hs.IdleTimeout
	a.ts.Config.MaxHeaderBytes = hs.MaxHeaderBytes
	a.ts.StartTLS()
	t.Cleanup(func() { a.ts.Close(); a.srv.Close() })
	a.caFile = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.ts.Certificate().Raw})
	if err := os.WriteFile(a.caFile, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return a
}

// open opens the agent as a remote, with the given token and extra options.
func (a *agent) open(t *testing.T, token string, opts map[string]string) remote.Remote {
	t.Helper()
	o := map[string]string{"ca_file": a.caFile, "chunk_size": "64k"}
	for k, v := range opts {
		o[k] = v
	}
	env := remote.Env{
		Secrets: &secret.Redactor{},
		Lookup: func(k string) secret.Secret {
			if k == "agent_token" {
				return secret.New(token)
			}
			return secret.Secret{}
		},
		Options: o,
	}
	r, err := remote.Open(context.Background(), a.ts.URL, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func peek(dir string) []string {
	des, _ := os.ReadDir(dir)
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

func TestConformance(t *testing.T) {
	dirs := map[*testing.T]string{}
	remotetest.Run(t, func(t *testing.T) remote.Remote {
		d := t.TempDir()
		dirs[t] = d
		return startAgent(t, d, nil).open(t, testToken, nil)
	}, remotetest.Options{Resumes: true, Peek: func(t *testing.T) []string { return peek(dirs[t]) }})
}

// statusRecorder lets a wrapper see how a request ended.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(c int)           { s.status = c; s.ResponseWriter.WriteHeader(c) }
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func isChunk(r *http.Request) bool {
	return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/chunks/")
}

func mustPut(t *testing.T, r remote.Remote, name string, b []byte, sha string) remote.PutResult {
	t.Helper()
	res, err := r.Put(context.Background(), name, remotetest.Src(b, sha), remote.PutOptions{})
	if err != nil {
		t.Fatalf("Put %s: %v", name, err)
	}
	return res
}

func checkFile(t *testing.T, dir, name string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s on the agent: %d bytes, %v", name, len(got), err)
	}
}

func TestWrongTokenIsRefusedWithoutEchoingIt(t *testing.T) {
	const canary = "CANARY-wrong-token-7a1b2c3d4e5f"
	dir := t.TempDir()
	a := startAgent(t, dir, nil)
	b, sha := remotetest.Data(100<<10, 1)
	for _, tok := range []string{canary, testToken + "x", " "} {
		r := a.open(t, tok, nil)
		_, err := r.Put(context.Background(), "x.safetensors", remotetest.Src(b, sha), remote.PutOptions{})
		if !errors.Is(err, agentremote.ErrUnauthorized) || !strings.Contains(err.Error(), "SCOPECTL_AGENT_TOKEN") {
			t.Fatalf("Put with token %q: %v", tok, err)
		}
		if strings.Contains(err.Error(), tok) && tok != " " {
			t.Fatalf("error shows the token: %v", err)
		}
		for _, err := range []error{listErr(r), r.Delete(context.Background(), "x.safetensors")} {
			if !errors.Is(err, agentremote.ErrUnauthorized) || strings.Contains(err.Error(), canary) {
				t.Fatalf("with token %q: %v", tok, err)
			}
		}
	}
	if n := peek(dir); len(n) != 0 {
		t.Fatalf("unauthenticated requests wrote %v", n)
	}
	// No token at all: Open refuses.
	_, err := remote.Open(context.Background(), a.ts.URL, remote.Env{Options: map[string]string{"ca_file": a.caFile}})
	if err == nil || !strings.Contains(err.Error(), "SCOPECTL_AGENT_TOKEN") {
		t.Fatalf("Open without a token: %v", err)
	}
}

func listErr(r remote.Remote) error {
	_, err := r.List(context.Background())
	return err
}

func TestOpenRefusesUnsafeURLs(t *testing.T) {
	env := remote.Env{Lookup: func(string) secret.Secret { return secret.New(testToken) }}
	for raw, want := range map[string]string{
		"http://pod.example.com:8765":               "clear text",
		"https://user:hunter2-password@pod.example": "credentials",
		"https://pod.example/?token=abc":            "query",
		"https://pod.example/#frag":                 "query",
		"https://:8765":                             "no host",
	} {
		_, err := remote.Open(context.Background(), raw, env)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Open %s: %v", raw, err)
		}
	}
	for _, raw := range []string{"http://127.0.0.1:8765", "http://localhost:1/prefix/", "http://[::1]:8765"} {
		r, err := remote.Open(context.Background(), raw, env)
		if err != nil {
			t.Errorf("Open %s: %v", raw, err)
			continue
		}
		if strings.HasSuffix(r.String(), "/") || strings.Contains(r.String(), testToken) {
			t.Errorf("String() = %s", r)
		}
	}
	allow := env
	allow.Options = map[string]string{"allow_http": "true", "parallel": "3", "chunk_size": "1M", "timeout": "5s", "retries": "0"}
	if _, err := remote.Open(context.Background(), "http://pod.example.com:8765", allow); err != nil {
		t.Errorf("allow_http: %v", err)
	}
	for k, v := range map[string]string{"parallel": "0", "chunk_size": "1k", "timeout": "soon", "retries": "-1", "ca_file": "/nonexistent"} {
		bad := env
		bad.Options = map[string]string{k: v}
		if _, err := remote.Open(context.Background(), "https://pod.example", bad); err == nil {
			t.Errorf("option %s=%s accepted", k, v)
		}
	}
}

// The agent's certificate is verified: without the test CA the connection fails.
func TestTLSIsVerified(t *testing.T) {
	a := startAgent(t, t.TempDir(), nil)
	env := remote.Env{Lookup: func(string) secret.Secret { return secret.New(testToken) }, Options: map[string]string{"retries": "0"}}
	r, err := remote.Open(context.Background(), a.ts.URL, env)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := listErr(r); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("List against an unknown CA: %v", err)
	}
}

// A chunk damaged in transit is refused by the agent and sent again.
func TestDamagedChunkIsResent(t *testing.T) {
	dir := t.TempDir()
	var damaged, rejected atomic.Int32
	a := startAgent(t, dir, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if isChunk(r) && strings.HasSuffix(r.URL.Path, "/chunks/3") && damaged.Add(1) == 1 {
				r.Body = &flipReader{r: r.Body, at: 1000}
			}
			sr := &statusRecorder{ResponseWriter: w}
			h.ServeHTTP(sr, r)
			if sr.status == http.StatusUnprocessableEntity {
				rejected.Add(1)
			}
		})
	})
	r := a.open(t, testToken, nil)
	b, sha := remotetest.Data(400<<10, 2)
	var prog bytes.Buffer
	res, err := r.Put(context.Background(), "d.safetensors", remotetest.Src(b, sha), remote.PutOptions{Progress: &prog})
	if err != nil {
		t.Fatal(err)
	}
	if rejected.Load() != 1 || damaged.Load() != 2 {
		t.Fatalf("rejected %d, chunk 3 sent %d times", rejected.Load(), damaged.Load())
	}
	if prog.Len() != len(b) || res.Sent != int64(len(b)) {
		t.Fatalf("progress %d, result %+v", prog.Len(), res)
	}
	checkFile(t, dir, "d.safetensors", b)
}

type flipReader struct {
	r   io.ReadCloser
	at  int64
	pos int64
}

func (f *flipReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if f.at >= f.pos && f.at < f.pos+int64(n) {
		p[f.at-f.pos] ^= 0x40
	}
	f.pos += int64(n)
	return n, err
}

func (f *flipReader) Close() error { return f.r.Close() }

// The agent dies mid-upload; a new agent on the same folder continues the upload.
func TestAgentRestartMidUpload(t *testing.T) {
	dir := t.TempDir()
	var done atomic.Int32
	killed := make(chan struct{})
	var once sync.Once
	var a *agent
	a = startAgent(t, dir, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if isChunk(r) && done.Load() >= 10 {
				once.Do(func() { close(killed) })
				panic(http.ErrAbortHandler) // the process is going away
			}
			sr := &statusRecorder{ResponseWriter: w}
			h.ServeHTTP(sr, r)
			if isChunk(r) && sr.status == http.StatusNoContent {
				done.Add(1)
			}
		})
	})
	go func() { <-killed; a.ts.CloseClientConnections(); a.ts.Close() }()
	r := a.open(t, testToken, map[string]string{"retries": "2", "parallel": "4"})
	b, sha := remotetest.Data(1<<20, 3) // 16 chunks of 64 KiB
	start := time.Now()
	_, err := r.Put(context.Background(), "k.safetensors", remotetest.Src(b, sha), remote.PutOptions{})
	if err == nil {
		t.Fatal("Put survived the agent's death")
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("Put took %v to give up", d)
	}
	<-killed
	a.ts.Close()
	a.srv.Close()
	if names := peek(dir); slices.Contains(names, "k.safetensors") {
		t.Fatal("partial upload published")
	}

	a2 := startAgent(t, dir, nil)
	r2 := a2.open(t, testToken, nil)
	res := mustPut(t, r2, "k.safetensors", b, sha)
	if res.Resumed < 10*64<<10 || res.Sent+res.Resumed != int64(len(b)) {
		t.Fatalf("did not resume: %+v", res)
	}
	checkFile(t, dir, "k.safetensors", b)
	if names := peek(dir); !slices.Equal(names, []string{"k.safetensors"}) {
		t.Fatalf("left behind: %v", names)
	}
}

func TestParallelPuts(t *testing.T) {
	dir := t.TempDir()
	a := startAgent(t, dir, nil)
	r := a.open(t, testToken, map[string]string{"parallel": "3"})
	type file struct {
		name string
		b    []byte
		sha  string
	}
	var files []file
	for i := range 5 {
		b, sha := remotetest.Data(300<<10+i*1000, uint64(10+i))
		files = append(files, file{fmt.Sprintf("f%d.safetensors", i), b, sha})
	}
	files = append(files, files[0]) // the same file twice at once
	var wg sync.WaitGroup
	for _, f := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.Put(context.Background(), f.name, remotetest.Src(f.b, f.sha), remote.PutOptions{}); err != nil {
				t.Errorf("Put %s: %v", f.name, err)
			}
		}()
	}
	wg.Wait()
	es, err := r.List(context.Background())
	if err != nil || len(es) != 5 {
		t.Fatalf("List: %v %v", es, err)
	}
	for i, e := range es {
		if e.Name != files[i].name || e.SHA256 != files[i].sha {
			t.Fatalf("entry %d: %+v", i, e)
		}
		checkFile(t, dir, e.Name, files[i].b)
	}
	if n := peek(dir); len(n) != 5 {
		t.Fatalf("left behind: %v", n)
	}
}

// A stalled agent yields a clear error within a bound, for every kind of request.
func TestStalledAgentTimesOut(t *testing.T) {
	release := make(chan struct{})
	var stallGet atomic.Bool
	a := startAgent(t, t.TempDir(), func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case isChunk(r), r.Method == http.MethodGet && r.URL.Path == "/v1/files":
				<-release
				return
			case r.Method == http.MethodGet && stallGet.Load():
				w.Header().Set("Content-Length", "1000000")
				w.WriteHeader(200)
				w.Write(make([]byte, 1000))
				http.NewResponseController(w).Flush()
				<-release
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	t.Cleanup(func() { close(release) }) // runs before the server's Close
	r := a.open(t, testToken, map[string]string{"timeout": "500ms", "retries": "1"})
	b, sha := remotetest.Data(200<<10, 4)
	bound := 10 * time.Second

	start := time.Now()
	_, err := r.Put(context.Background(), "s.safetensors", remotetest.Src(b, sha), remote.PutOptions{})
	if err == nil || !strings.Contains(err.Error(), "did not answer within 500ms") || time.Since(start) > bound {
		t.Fatalf("Put to a stalled agent: %v after %v", err, time.Since(start))
	}
	start = time.Now()
	if err := listErr(r); err == nil || !strings.Contains(err.Error(), "did not answer") || time.Since(start) > bound {
		t.Fatalf("List from a stalled agent: %v after %v", err, time.Since(start))
	}

	os.WriteFile(filepath.Join(a.dir, "g.safetensors"), b, 0o644)
	stallGet.Store(true)
	start = time.Now()
	rc, err := r.Get(context.Background(), "g.safetensors", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(rc)
	rc.Close()
	if err == nil || !strings.Contains(err.Error(), "did not answer") || time.Since(start) > bound {
		t.Fatalf("Get from a stalled agent: %v after %v", err, time.Since(start))
	}
}

// Get, Hash and Delete against the agent, and names the agent should never list.
func TestGetHashDelete(t *testing.T) {
	dir := t.TempDir()
	a := startAgent(t, dir, nil)
	r := a.open(t, testToken, nil)
	b, sha := remotetest.Data(100<<10, 5)
	mustPut(t, r, "a b%c.safetensors", b, sha) // names that need escaping
	rc, err := r.Get(context.Background(), "a b%c.safetensors", int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if rest, _ := io.ReadAll(rc); len(rest) != 0 {
		t.Fatal("Get at the end returned data")
	}
	rc.Close()
	h, err := r.(remote.Hasher).Hash(context.Background(), "a b%c.safetensors")
	if err != nil || h != sha {
		t.Fatalf("Hash: %s %v", h, err)
	}
	if _, err := r.(remote.Hasher).Hash(context.Background(), "missing.safetensors"); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("Hash of a missing file: %v", err)
	}
	os.WriteFile(filepath.Join(dir, remote.TempName("x.safetensors", sha)), b, 0o644)
	os.Symlink("/etc/passwd", filepath.Join(dir, "p.safetensors"))
	es, _ := r.List(context.Background())
	if len(es) != 1 || es[0].Name != "a b%c.safetensors" {
		t.Fatalf("List: %+v", es)
	}
	if err := r.Delete(context.Background(), "p.safetensors"); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("Delete of a symlink: %v", err)
	}
}
