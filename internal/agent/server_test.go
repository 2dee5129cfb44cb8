package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/testkit"
)

const token = "test-token-CANARY-5f1c2a9e7b"

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testkit.SyncBuffer

type testAgent struct {
	t   *testing.T
	dir string
	srv *Server
	ts  *httptest.Server
	log *syncBuffer
}

func start(t *testing.T, dir string, tweak func(*Server)) *testAgent {
	t.Helper()
	a := &testAgent{t: t, dir: dir, log: &syncBuffer{}}
	a.srv = &Server{Dir: dir, Token: secret.New(token), Log: slog.New(slog.NewTextHandler(a.log, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if tweak != nil {
		tweak(a.srv)
	}
	a.ts = httptest.NewUnstartedServer(a.srv)
	hs := a.srv.HTTPServer()
	a.ts.Config.ReadHeaderTimeout, a.ts.Config.ReadTimeout, a.ts.Config.IdleTimeout = hs.ReadHeaderTimeout, hs.ReadTimeout, hs.IdleTimeout
	a.ts.StartTLS()
	t.Cleanup(a.stop)
	return a
}

func (a *testAgent) stop() {
	a.ts.Close()
	a.srv.Close()
}

// do sends a request with the token (hdr may replace or, with "", remove headers) and
// returns the status and body.
func (a *testAgent) do(method, path string, body []byte, hdr map[string]string) (int, []byte) {
	a.t.Helper()
	req, err := http.NewRequest(method, a.ts.URL+path, bytes.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	c := *a.ts.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		a.t.Errorf("%s %s: %v", method, path, err) // Errorf: do runs in goroutines too
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (a *testAgent) create(name string, data []byte, chunk int64) Upload {
	a.t.Helper()
	body, _ := json.Marshal(CreateRequest{Name: name, Size: int64(len(data)), SHA256: hexSum(data), ChunkSize: chunk})
	st, b := a.do("POST", "/v1/uploads", body, nil)
	if st != 200 {
		a.t.Fatalf("create %s: %d %s", name, st, b)
	}
	var up Upload
	if err := json.Unmarshal(b, &up); err != nil {
		a.t.Fatal(err)
	}
	return up
}

func (a *testAgent) putChunk(up Upload, data []byte, i int) (int, []byte) {
	a.t.Helper()
	off := int64(i) * up.ChunkSize
	c := data[off : off+ChunkLen(up.Size, up.ChunkSize, i)]
	return a.do("PUT", fmt.Sprintf("/v1/uploads/%s/chunks/%d", up.ID, i), c, map[string]string{ChunkSHA256Header: hexSum(c)})
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func content(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed ^ byte(i>>9)
	}
	return b
}

func TestHealthAndAuth(t *testing.T) {
	a := start(t, t.TempDir(), nil)
	st, b := a.do("GET", "/v1/health", nil, map[string]string{"Authorization": ""})
	if st != 200 || strings.TrimSpace(string(b)) != `{"status":"ok","api":"v1"}` {
		t.Fatalf("health: %d %s", st, b)
	}
	for _, auth := range []string{"", "Bearer wrong-token-wrong-token", "Bearer " + token + "x", "Basic " + token, "Bearer"} {
		st, b := a.do("GET", "/v1/files", nil, map[string]string{"Authorization": auth})
		if st != 401 || !strings.Contains(string(b), CodeUnauthorized) {
			t.Errorf("auth %q: %d %s", auth, st, b)
		}
		// Even unauthenticated requests for bad paths get 401, not a hint about the API.
		if st, _ := a.do("DELETE", "/v1/files/x.safetensors", nil, map[string]string{"Authorization": auth}); st != 401 {
			t.Errorf("auth %q delete: %d", auth, st)
		}
	}
	if st, b := a.do("GET", "/v1/files", nil, map[string]string{"Authorization": "bearer " + token}); st != 200 || string(b) != "[]\n" {
		t.Fatalf("list: %d %s", st, b)
	}
	if strings.Contains(a.log.String(), token) || strings.Contains(a.log.String(), "CANARY") {
		t.Fatal("the token reached the log")
	}
	if !strings.Contains(a.log.String(), "/v1/files") {
		t.Fatal("requests are not logged")
	}

	// A server without a token refuses everything but health.
	b2 := start(t, t.TempDir(), func(s *Server) { s.Token = secret.Secret{} })
	if st, _ := b2.do("GET", "/v1/files", nil, map[string]string{"Authorization": "Bearer "}); st != 401 {
		t.Fatalf("tokenless server: %d", st)
	}
}

func TestUploadCommitListGet(t *testing.T) {
	a := start(t, t.TempDir(), nil)
	data := content(300<<10+17, 1)
	up := a.create("x.safetensors", data, 1) // below the minimum: the agent raises it
	if up.ChunkSize != MinChunkSize || up.Chunks != 5 || len(up.Have) != 0 {
		t.Fatalf("upload %+v", up)
	}
	for _, i := range []int{4, 0, 2, 1, 3} { // any order
		if st, b := a.putChunk(up, data, i); st != 204 {
			t.Fatalf("chunk %d: %d %s", i, st, b)
		}
	}
	if st, b := a.do("POST", "/v1/uploads/"+up.ID+"/commit", nil, nil); st != 200 {
		t.Fatalf("commit: %d %s", st, b)
	}
	got, _ := os.ReadFile(filepath.Join(a.dir, "x.safetensors"))
	if !bytes.Equal(got, data) {
		t.Fatal("published content differs")
	}
	if names := peekDir(a.dir); !slices.Equal(names, []string{"x.safetensors"}) {
		t.Fatalf("left behind: %v", names)
	}
	st, b := a.do("GET", "/v1/files", nil, nil)
	var es []Entry
	json.Unmarshal(b, &es)
	if st != 200 || len(es) != 1 || es[0].SHA256 != hexSum(data) || es[0].Size != int64(len(data)) {
		t.Fatalf("list: %d %s", st, b)
	}
	st, b = a.do("GET", "/v1/files/x.safetensors", nil, map[string]string{"Range": "bytes=1000-"})
	if st != 206 || !bytes.Equal(b, data[1000:]) {
		t.Fatalf("range get: %d, %d bytes", st, len(b))
	}
	if st, _ := a.do("POST", "/v1/uploads/"+up.ID+"/commit", nil, nil); st != 404 {
		t.Fatalf("second commit: %d", st)
	}

	// The listing's hash follows a replaced file; with no budget, new files go unhashed
	// in the listing but the sha256 endpoint computes them.
	other := content(5000, 2)
	os.WriteFile(filepath.Join(a.dir, "y.tmp"), other, 0o644)
	os.Rename(filepath.Join(a.dir, "y.tmp"), filepath.Join(a.dir, "x.safetensors"))
	_, b = a.do("GET", "/v1/files", nil, nil)
	json.Unmarshal(b, &es)
	if es[0].SHA256 != hexSum(other) {
		t.Fatalf("stale hash after replace: %s", b)
	}
	a.srv.ListHashBudget = time.Nanosecond
	os.WriteFile(filepath.Join(a.dir, "z.safetensors"), data[:100], 0o644)
	_, b = a.do("GET", "/v1/files", nil, nil)
	json.Unmarshal(b, &es)
	if len(es) != 2 || es[1].SHA256 != "" {
		t.Fatalf("listing hashed beyond its budget: %s", b)
	}
	_, b = a.do("GET", "/v1/files/z.safetensors/sha256", nil, nil)
	var e Entry
	json.Unmarshal(b, &e)
	if e.SHA256 != hexSum(data[:100]) {
		t.Fatalf("sha256 endpoint: %s", b)
	}
	if st, _ := a.do("DELETE", "/v1/files/z.safetensors", nil, nil); st != 204 {
		t.Fatalf("delete: %d", st)
	}
	if st, _ := a.do("DELETE", "/v1/files/z.safetensors", nil, nil); st != 404 {
		t.Fatalf("second delete: %d", st)
	}
}

func peekDir(dir string) []string {
	des, _ := os.ReadDir(dir)
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

func TestChunkChecks(t *testing.T) {
	a := start(t, t.TempDir(), nil)
	data := content(200<<10, 3)
	up := a.create("c.safetensors", data, 64<<10)
	c := data[:64<<10]
	bad := slices.Clone(c)
	bad[100] ^= 1
	path := "/v1/uploads/" + up.ID + "/chunks/0"
	if st, b := a.do("PUT", path, bad, map[string]string{ChunkSHA256Header: hexSum(c)}); st != 422 || !strings.Contains(string(b), CodeChunkMismatch) {
		t.Fatalf("damaged chunk: %d %s", st, b)
	}
	for _, tc := range []struct {
		path string
		body []byte
		hdr  string
		want int
	}{
		{path, c, "", 400},                           // no hash
		{path, c, "ABC", 400},                        // malformed hash
		{path, c[:1000], hexSum(c[:1000]), 400},      // short
		{path, append(slices.Clone(c), 1), "x", 400}, // long (and malformed)
		{path, append(slices.Clone(c), 1), hexSum(c), 400},
		{"/v1/uploads/" + up.ID + "/chunks/4", c, hexSum(c), 400},
		{"/v1/uploads/" + up.ID + "/chunks/-1", c, hexSum(c), 400},
		{"/v1/uploads/" + strings.Repeat("0", 32) + "/chunks/0", c, hexSum(c), 404},
		{"/v1/uploads/..%2F..%2Fx/chunks/0", c, hexSum(c), 404},
	} {
		if st, b := a.do("PUT", tc.path, tc.body, map[string]string{ChunkSHA256Header: tc.hdr}); st != tc.want {
			t.Errorf("PUT %s (%d bytes, %q): %d %s", tc.path, len(tc.body), tc.hdr, st, b)
		}
	}
	// A body over the declared length but without Content-Length is cut at the limit.
	req, _ := http.NewRequest("PUT", a.ts.URL+path, io.MultiReader(bytes.NewReader(c), strings.NewReader("extra")))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set(ChunkSHA256Header, hexSum(c))
	if resp, err := a.ts.Client().Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Errorf("chunked over-long body: %d", resp.StatusCode)
		}
	}
	if up2 := a.create("c.safetensors", data, 64<<10); len(up2.Have) != 0 || up2.ID != up.ID {
		t.Fatalf("rejected chunks recorded: %+v", up2)
	}
	big := bytes.Repeat([]byte(" "), 100<<10)
	if st, _ := a.do("POST", "/v1/uploads", big, nil); st != 413 {
		t.Fatalf("huge JSON body: %d", st)
	}
	body, _ := json.Marshal(CreateRequest{Name: "h.safetensors", Size: int64(MaxChunks)*MaxChunkSize + 1, SHA256: hexSum(nil)})
	if st, _ := a.do("POST", "/v1/uploads", body, nil); st != 413 {
		t.Fatalf("too large upload: %d", st)
	}
	// Commit before all chunks: the missing ones are named.
	st, b := a.do("POST", "/v1/uploads/"+up.ID+"/commit", nil, nil)
	var eb ErrorBody
	json.Unmarshal(b, &eb)
	if st != 409 || eb.Code != CodeIncomplete || !slices.Equal(eb.Missing, []int{0, 1, 2, 3}) {
		t.Fatalf("early commit: %d %s", st, b)
	}
}

func TestCommitVerifies(t *testing.T) {
	a := start(t, t.TempDir(), nil)
	data := content(256<<10, 4)
	up := a.create("v.safetensors", data, 64<<10)
	for i := range up.Chunks {
		a.putChunk(up, data, i)
	}
	// Damage on disk after receipt: commit asks for that chunk again.
	tmp := filepath.Join(a.dir, remote.TempName("v.safetensors", up.SHA256))
	f, _ := os.OpenFile(tmp, os.O_RDWR, 0)
	f.WriteAt([]byte{0xff, 0xfe}, 2*64<<10+5)
	f.Close()
	st, b := a.do("POST", "/v1/uploads/"+up.ID+"/commit", nil, nil)
	var eb ErrorBody
	json.Unmarshal(b, &eb)
	if st != 409 || !slices.Equal(eb.Missing, []int{2}) {
		t.Fatalf("commit of damaged file: %d %s", st, b)
	}
	if _, err := os.Stat(filepath.Join(a.dir, "v.safetensors")); err == nil {
		t.Fatal("published a damaged file")
	}
	a.putChunk(up, data, 2)
	if st, b := a.do("POST", "/v1/uploads/"+up.ID+"/commit", nil, nil); st != 200 {
		t.Fatalf("commit: %d %s", st, b)
	}

	// Content whose sha256 is not the declared one is never published.
	wrong := content(70000, 5)
	body, _ := json.Marshal(CreateRequest{Name: "w.safetensors", Size: int64(len(wrong)), SHA256: hexSum(data), ChunkSize: 64 << 10})
	_, b = a.do("POST", "/v1/uploads", body, nil)
	var up2 Upload
	json.Unmarshal(b, &up2)
	a.putChunk(up2, wrong, 0)
	a.putChunk(up2, wrong, 1)
	if st, b := a.do("POST", "/v1/uploads/"+up2.ID+"/commit", nil, nil); st != 422 || !strings.Contains(string(b), CodeHashMismatch) {
		t.Fatalf("mismatching commit: %d %s", st, b)
	}
	if names := peekDir(a.dir); !slices.Equal(names, []string{"v.safetensors"}) {
		t.Fatalf("after mismatch: %v", names)
	}
}

func TestRestartKeepsSession(t *testing.T) {
	dir := t.TempDir()
	a := start(t, dir, nil)
	data := content(300<<10, 6)
	up := a.create("r.safetensors", data, 64<<10)
	a.putChunk(up, data, 0)
	a.putChunk(up, data, 3)
	a.stop()

	b := start(t, dir, nil) // a new process: nothing in memory
	if st, body := b.putChunk(up, data, 1); st != 204 {
		t.Fatalf("chunk to the old session id after restart: %d %s", st, body)
	}
	up2 := b.create("r.safetensors", data, 1<<20) // a different wish: the session keeps its size
	if up2.ID != up.ID || up2.ChunkSize != up.ChunkSize || !slices.Equal(up2.Have, []int{0, 1, 3}) {
		t.Fatalf("resumed session: %+v", up2)
	}
	b.putChunk(up, data, 2)
	b.putChunk(up, data, 4)
	if st, body := b.do("POST", "/v1/uploads/"+up.ID+"/commit", nil, nil); st != 200 {
		t.Fatalf("commit: %d %s", st, body)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "r.safetensors"))
	if !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}

	// A state file whose temporary file vanished starts over.
	up3 := b.create("s.safetensors", data, 64<<10)
	b.putChunk(up3, data, 0)
	b.stop()
	os.Remove(filepath.Join(dir, remote.TempName("s.safetensors", up3.SHA256)))
	c := start(t, dir, nil)
	if up4 := c.create("s.safetensors", data, 64<<10); len(up4.Have) != 0 {
		t.Fatalf("session without its file resumed: %+v", up4)
	}
}

func TestPathsCannotEscape(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "lora")
	os.Mkdir(dir, 0o755)
	secretFile := filepath.Join(parent, "secret.txt")
	os.WriteFile(secretFile, []byte("TOP SECRET"), 0o600)
	os.Symlink("../secret.txt", filepath.Join(dir, "link.safetensors"))
	os.Symlink(secretFile, filepath.Join(dir, "abs.safetensors"))
	a := start(t, dir, nil)

	for _, p := range []string{
		"/v1/files/..%2Fsecret.txt", "/v1/files/%2e%2e%2fsecret.txt", "/v1/files/%2E%2E%2Fsecret.txt",
		"/v1/files/%2e%2e", "/v1/files/..", "/v1/files/../secret.txt", "/v1/files/../../lora/../secret.txt",
		"/v1/files/%2F" + strings.TrimPrefix(url(secretFile), "/"), "/v1/files/%2e%2e%5csecret.txt",
		"/v1/files/link.safetensors", "/v1/files/abs.safetensors", "/v1/files/link.safetensors/sha256",
		"/v1/files/%2e%2e%2fsecret.txt/sha256",
	} {
		for _, m := range []string{"GET", "DELETE"} {
			st, b := a.do(m, p, nil, nil)
			if st < 300 || bytes.Contains(b, []byte("TOP SECRET")) {
				t.Errorf("%s %s: %d %q", m, p, st, b)
			}
		}
	}
	for _, n := range []string{"../escape.safetensors", "/tmp/escape.safetensors", secretFile, "a/../../escape", "..", ".", "",
		`..\escape`, "x\x00.safetensors", remote.TempName("x.safetensors", hexSum(nil))} {
		body, _ := json.Marshal(CreateRequest{Name: n, Size: 3, SHA256: hexSum([]byte("abc"))})
		if st, b := a.do("POST", "/v1/uploads", body, nil); st != 400 || !strings.Contains(string(b), CodeBadName) {
			t.Errorf("create %q: %d %s", n, st, b)
		}
	}
	st, b := a.do("GET", "/v1/files", nil, nil)
	if st != 200 || string(b) != "[]\n" {
		t.Fatalf("listing shows links: %s", b)
	}
	if got, _ := os.ReadFile(secretFile); string(got) != "TOP SECRET" {
		t.Fatal("file outside the folder changed")
	}
	if names := peekDir(parent); !slices.Equal(names, []string{"lora", "secret.txt"}) {
		t.Fatalf("written outside the folder: %v", names)
	}
	if names := peekDir(dir); !slices.Equal(names, []string{"abs.safetensors", "link.safetensors"}) {
		t.Fatalf("folder: %v", names)
	}
}

func url(p string) string { return strings.ReplaceAll(filepath.ToSlash(p), "/", "%2F") }

// A client that sends headers and a little of a chunk, then stalls, is cut off, and the
// buffer it held serves the next chunk.
func TestStalledClientIsCutOff(t *testing.T) {
	a := start(t, t.TempDir(), func(s *Server) { s.ChunkTimeout = 300 * time.Millisecond; s.MaxBuffers = 1 })
	data := content(128<<10, 7)
	up := a.create("st.safetensors", data, 64<<10)
	conn, err := tls.Dial("tcp", a.ts.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true}) // test-only raw client
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /v1/uploads/%s/chunks/0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n%s: %s\r\nContent-Length: %d\r\n\r\n",
		up.ID, token, ChunkSHA256Header, hexSum(data[:64<<10]), 64<<10)
	conn.Write(data[:10])
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.ReadAll(conn) // returns when the server gives up on us
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stalled client held on for %v", d)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if st, b := a.putChunk(up, data, 1); st != 204 {
			t.Errorf("next chunk: %d %s", st, b)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the stalled client's buffer was never released")
	}
}

// Many clients uploading chunks of several files at once.
func TestConcurrentChunks(t *testing.T) {
	a := start(t, t.TempDir(), func(s *Server) { s.MaxBuffers = 3 })
	var wg sync.WaitGroup
	for f := range 4 {
		data := content(600<<10+f, byte(10+f))
		name := fmt.Sprintf("p%d.safetensors", f)
		up := a.create(name, data, 64<<10)
		for i := range up.Chunks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if st, b := a.putChunk(up, data, i); st != 204 {
					t.Errorf("%s chunk %d: %d %s", name, i, st, b)
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.Now().Add(20 * time.Second)
			for time.Now().Before(deadline) { // bounded: commit once every chunk is in
				st, b := a.do("POST", "/v1/uploads/"+up.ID+"/commit", nil, nil)
				if st == 200 {
					return
				}
				if st != 409 {
					t.Errorf("commit %s: %d %s", name, st, b)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Errorf("commit %s never succeeded", name)
		}()
	}
	wg.Wait()
	for f := range 4 {
		got, _ := os.ReadFile(filepath.Join(a.dir, fmt.Sprintf("p%d.safetensors", f)))
		if !bytes.Equal(got, content(600<<10+f, byte(10+f))) {
			t.Fatalf("file %d differs", f)
		}
	}
	if n := len(peekDir(a.dir)); n != 4 {
		t.Fatalf("left behind: %v", peekDir(a.dir))
	}
}

func TestExpiredSessionsAreRemoved(t *testing.T) {
	dir := t.TempDir()
	a := start(t, dir, nil)
	data := content(100<<10, 8)
	up := a.create("old.safetensors", data, 64<<10)
	a.putChunk(up, data, 0)
	a.stop()
	long := time.Now().Add(-30 * 24 * time.Hour)
	for _, n := range peekDir(dir) {
		os.Chtimes(filepath.Join(dir, n), long, long)
	}
	os.WriteFile(filepath.Join(dir, remote.TempName("orphan.safetensors", hexSum(nil))), []byte("x"), 0o644)
	os.Chtimes(filepath.Join(dir, remote.TempName("orphan.safetensors", hexSum(nil))), long, long)
	os.WriteFile(filepath.Join(dir, remote.TempName("fresh.safetensors", hexSum(nil))), []byte("x"), 0o644)
	b := start(t, dir, nil)
	b.create("new.safetensors", data, 64<<10) // runs the collection
	names := peekDir(dir)
	for _, n := range names {
		if strings.Contains(n, "old") || strings.Contains(n, "orphan") || strings.Contains(n, up.ID) {
			t.Fatalf("expired files kept: %v", names)
		}
	}
	if !slices.Contains(names, remote.TempName("fresh.safetensors", hexSum(nil))) {
		t.Fatalf("a fresh temporary file was removed: %v", names)
	}
}

func TestAbort(t *testing.T) {
	a := start(t, t.TempDir(), nil)
	data := content(100<<10, 9)
	up := a.create("ab.safetensors", data, 64<<10)
	a.putChunk(up, data, 0)
	if st, _ := a.do("DELETE", "/v1/uploads/"+up.ID, nil, nil); st != 204 {
		t.Fatalf("abort: %d", st)
	}
	if names := peekDir(a.dir); len(names) != 0 {
		t.Fatalf("abort left %v", names)
	}
	if st, _ := a.putChunk(up, data, 1); st != 404 {
		t.Fatalf("chunk after abort: %d", st)
	}
	_ = context.Background
}
