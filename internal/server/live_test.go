package server_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"image/jpeg"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/deploy/deploytest"
	"github.com/daydreamlive/scopectl/internal/inflight"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/server"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/testkit"
	"github.com/daydreamlive/scopectl/internal/train"

	"golang.org/x/crypto/ssh"
)

// event is one server-sent event.
type event struct {
	ID, Name string
	Data     string
}

// sseStream is an open event stream.
type sseStream struct {
	t    *testing.T
	resp *http.Response
	ch   chan event
}

// openSSE opens path as an event stream (lastID: a reconnect's Last-Event-ID).
func (h *harness) openSSE(path, lastID string) *sseStream {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", h.http.URL+path, nil)
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		resp.Body.Close()
		h.t.Fatalf("%s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &sseStream{t: h.t, resp: resp, ch: make(chan event, 100)}
	go func() {
		defer close(s.ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev event
		for sc.Scan() {
			l := sc.Text()
			for _, c := range canaries {
				if strings.Contains(l, c) {
					h.t.Errorf("%s: a canary secret in the stream", path)
				}
			}
			switch {
			case l == "":
				if ev.Name != "" {
					s.ch <- ev
				}
				ev = event{}
			case strings.HasPrefix(l, "id: "):
				ev.ID = l[4:]
			case strings.HasPrefix(l, "event: "):
				ev.Name = l[7:]
			case strings.HasPrefix(l, "data: "):
				ev.Data = l[6:]
			}
		}
	}()
	return s
}

// lines reads events until the lines seen so far contain want (at most 20 s); it
// returns every line read and the last id.
func (s *sseStream) lines(want string) ([]string, string) {
	s.t.Helper()
	var all []string
	id := ""
	deadline := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-s.ch:
			if !ok {
				s.t.Fatalf("the stream ended before %q: %q", want, all)
			}
			if ev.Name != "lines" {
				continue
			}
			var d server.LogLines
			if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
				s.t.Fatalf("event data: %v: %s", err, ev.Data)
			}
			all = append(all, d.Lines...)
			if ev.ID != d.Cursor {
				s.t.Errorf("event id %q, cursor %q", ev.ID, d.Cursor)
			}
			id = ev.ID
			if strings.Contains(strings.Join(all, "\n"), want) {
				return all, id
			}
		case <-deadline:
			s.t.Fatalf("no %q in the stream after 20 s: %q", want, all)
		}
	}
}

// quiet: no lines arrive for d.
func (s *sseStream) quiet(d time.Duration) {
	s.t.Helper()
	tm := time.After(d)
	for {
		select {
		case ev := <-s.ch:
			if ev.Name == "lines" {
				s.t.Errorf("unexpected lines: %s", ev.Data)
			}
		case <-tm:
			return
		}
	}
}

// A training job's log follows live by server-sent events whose ids are byte offsets:
// whole lines only (a line written in two pieces comes once, whole), redacted (a secret
// written in two pieces too), and a reconnect with Last-Event-ID resumes after the last
// line it got, with nothing repeated.
func TestJobLogStream(t *testing.T) {
	h := newHarness(t, true)
	logPath := filepath.Join(h.jobDir, "train.log")
	size := func() int64 { fi, _ := os.Stat(logPath); return fi.Size() }
	s := h.openSSE("/api/v1/jobs/"+h.jobID+"/log/stream", "")
	got, id := s.lines("640/1000")
	if len(got) != 3 || got[0] != "loading model" || !strings.HasPrefix(got[1], "HF_TOKEN=") || id != strconv.FormatInt(size(), 10) {
		t.Fatalf("first lines: %q, id %s (size %d)", got, id, size())
	}
	f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("step 641 half a li")
	f.WriteString("ne and a token " + canaryHF[:9])
	s.quiet(400 * time.Millisecond)
	f.WriteString(canaryHF[9:] + " after it\n")
	got, id2 := s.lines("step 641")
	if len(got) != 1 || !strings.HasPrefix(got[0], "step 641 half a line and a token ") || !strings.HasSuffix(got[0], " after it") || id2 != strconv.FormatInt(size(), 10) {
		t.Fatalf("the line written in pieces: %q id %s", got, id2)
	}
	// a reconnect from the first id gets the one line after it, not the first three
	r := h.openSSE("/api/v1/jobs/"+h.jobID+"/log/stream", id)
	if got, _ := r.lines("step 641"); len(got) != 1 {
		t.Errorf("resumed: %q", got)
	}
	f.WriteString("step 642\n")
	if got, _ := r.lines("step 642"); len(got) != 1 || got[0] != "step 642" {
		t.Errorf("after the resume: %q", got)
	}
	for _, c := range []struct {
		path, hdr string
		code      int
	}{{"/api/v1/jobs/" + h.jobID + "/log/stream?offset=-1", "", 400}, {"/api/v1/jobs/nope/log/stream", "", 404},
		{"/api/v1/jobs/" + h.jobID + "/log/stream", "x", 400}} {
		hdr := map[string]string{}
		if c.hdr != "" {
			hdr["Last-Event-ID"] = c.hdr
		}
		if code, body, _ := h.do("GET", c.path, "", hdr); code != c.code || !strings.Contains(body, `"error"`) {
			t.Errorf("%s: %d %s", c.path, code, body)
		}
	}
}

// A pod's Scope log follows live (Scope's /api/v1/logs/tail with its byte offsets, as
// `scopectl logs -f`): what Scope logs after the stream opened arrives, and a reconnect
// with the last id gets only what came after it.
func TestPodLogStream(t *testing.T) {
	h := newHarness(t, true)
	s := h.openSSE("/api/v1/pods/"+h.podID+"/logs", "")
	_, id := s.lines("Pipeline longlive loaded")
	if !strings.HasPrefix(id, "o") {
		t.Fatalf("id %q: want o and an offset", id)
	}
	sc := &scope.Client{Base: h.scope}
	ctx := context.Background()
	if err := sc.LoadPipeline(ctx, "streamdiffusionv2", nil, nil); err != nil {
		t.Fatal(err)
	}
	got, id2 := s.lines("Pipeline streamdiffusionv2 loaded")
	if strings.Contains(strings.Join(got, "\n"), "longlive") {
		t.Errorf("old lines again: %q", got)
	}
	r := h.openSSE("/api/v1/pods/"+h.podID+"/logs", id2)
	r.quiet(400 * time.Millisecond)
	if err := sc.LoadPipeline(ctx, "longlive", nil, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.lines("Pipeline longlive loaded"); strings.Contains(strings.Join(got, "\n"), "streamdiffusionv2") {
		t.Errorf("resumed stream repeats: %q", got)
	}
	for path, code := range map[string]int{"/api/v1/pods/nope/logs": 404, "/api/v1/pods/" + h.podID + "/logs?cursor=t12": 400, "/api/v1/pods/" + h.podID + "/logs?cursor=o-5": 400} {
		if c, body, _ := h.do("GET", path, "", nil); c != code || !strings.Contains(body, `"error"`) {
			t.Errorf("%s: %d %s", path, c, body)
		}
	}
}

// The pod's live frame comes from Scope's session API as a JPEG; a Scope with no
// session has none (404 saying so); bad input is a JSON error.
func TestPodFrame(t *testing.T) {
	h := newHarness(t, true)
	req, _ := http.NewRequest("GET", h.http.URL+"/api/v1/pods/"+h.podID+"/frame?quality=60", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	img, err := jpeg.Decode(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/jpeg" || resp.Header.Get("Cache-Control") != "no-store" || err != nil || img.Bounds().Dx() != 512 {
		t.Fatalf("frame: %d %s %v", resp.StatusCode, resp.Header.Get("Content-Type"), err)
	}
	for path, code := range map[string]int{"/api/v1/pods/nope/frame": 404, "/api/v1/pods/" + h.podID + "/frame?quality=0": 400, "/api/v1/pods/" + h.podID + "/frame?quality=x": 400} {
		if c, body, _ := h.do("GET", path, "", nil); c != code || !strings.Contains(body, `"error"`) {
			t.Errorf("%s: %d %s", path, c, body)
		}
	}
	// the same pod, its Scope with no streaming session
	idle := startScopeWith(t, "10ms", 0, false)
	srv, err := server.New(server.Options{Lib: h.lib, RunPod: h.client, Token: mustSecret(canaryToken), OpenReads: true, Interval: time.Hour,
		ScopeURL: scopeAt(idle)})
	if err != nil {
		t.Fatal(err)
	}
	h2 := &harness{t: t, http: startHTTP(t, srv)}
	if c, body, _ := h2.do("GET", "/api/v1/pods/"+h.podID+"/frame", "", nil); c != 404 || !strings.Contains(body, "no streaming session") {
		t.Errorf("no session: %d %s", c, body)
	}
}

// Transfers other scopectl processes run show in /api/v1/transfers from the data dir's
// registry, with their process and progress; when the process is gone, so is its entry.
func TestCLITransfers(t *testing.T) {
	h := newHarness(t, true)
	cmd := exec.Command("sleep", "60")
	testkit.KillWithParent(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	host, _ := os.Hostname()
	e := inflight.Entry{ID: "20261202T080000-0011223344556677", Op: "pull", Item: "slime.safetensors", PID: cmd.Process.Pid, Host: host,
		Done: 300 << 20, Total: 900 << 20, StartedAt: time.Now().Add(-time.Minute)}
	b, _ := json.Marshal(e)
	os.MkdirAll(string(h.xfers), 0o700)
	os.WriteFile(filepath.Join(string(h.xfers), e.ID+".json"), b, 0o600)
	code, body, _ := h.do("GET", "/api/v1/transfers", "", nil)
	var l struct{ Items []server.Transfer }
	decodeJSON(t, body, &l)
	if code != 200 || len(l.Items) != 1 {
		t.Fatalf("transfers: %d %s", code, body)
	}
	x := l.Items[0]
	if x.Source != "cli" || x.Op != "pull" || x.PID != cmd.Process.Pid || x.LoRA != "slime.safetensors" || x.Done != 300<<20 || x.Total != 900<<20 || x.State != "running" {
		t.Errorf("cli transfer: %+v", x)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if _, body, _ := h.do("GET", "/api/v1/transfers", "", nil); strings.Contains(body, "slime.safetensors") {
		t.Errorf("a transfer of a process that is gone: %s", body)
	}
	if _, err := os.Stat(filepath.Join(string(h.xfers), e.ID+".json")); err == nil {
		t.Error("its file stayed")
	}
}

func mustSecret(v string) secret.Secret { return secret.New(v) }

func scopeAt(u string) func(provider.Pod) string { return func(provider.Pod) string { return u } }

func startHTTP(t *testing.T, srv *server.Server) *httptest.Server {
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return hs
}

// A sync the page started is canceled by DELETE /api/v1/transfers/{id} (here one stuck
// in the SSH handshake with a host that never answers); one that ended, an unknown one
// and another process's are refused.
func TestCancelTransfer(t *testing.T) {
	h := newHarness(t, true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // accepts and never speaks
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	home := t.TempDir() // a key to offer, for a handshake that never ends
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519"), pem.EncodeToMemory(blk), 0o600)
	t.Setenv("HOME", home)
	t.Setenv("SSH_AUTH_SOCK", "")
	code, body, _ := h.do("POST", "/api/v1/loras/slime/sync", `{"to":"ssh://me@`+ln.Addr().String()+`/loras"}`, auth())
	var x server.Transfer
	decodeJSON(t, body, &x)
	if code != 200 || x.State != "running" {
		t.Fatalf("sync: %d %s", code, body)
	}
	time.Sleep(300 * time.Millisecond)
	code, body, _ = h.do("DELETE", "/api/v1/transfers/"+x.ID, "", auth())
	decodeJSON(t, body, &x)
	if code != 200 || x.State != "canceled" || x.EndedAt == nil {
		_, all, _ := h.do("GET", "/api/v1/transfers", "", nil)
		t.Fatalf("cancel: %d %s (%s)", code, body, all)
	}
	for id, want := range map[string]int{x.ID: 409, "t999999": 404, "cli-20261202T080000-00": 409} {
		if code, body, _ := h.do("DELETE", "/api/v1/transfers/"+id, "", auth()); code != want || !strings.Contains(body, `"error"`) {
			t.Errorf("cancel %s: %d %s, want %d", id, code, body, want)
		}
	}
	if code, _, _ := h.do("DELETE", "/api/v1/transfers/"+x.ID, "", nil); code != 401 {
		t.Errorf("cancel without the token: %d", code)
	}
}

// On an SSH host (a Docker host scopectl recorded), the pod's log is the Scope
// container's output through `docker logs` over a real sshd, with this machine's Docker
// engine running the stand-in as the container: what it logs after the stream opened
// arrives, and a reconnect with the last id (docker's timestamp) repeats nothing.
func TestSSHHostLogStream(t *testing.T) {
	deploytest.RequireDocker(t)
	ctx := context.Background()
	// the stand-in as an image of its own (FROM scratch), run as the Scope container
	dir := t.TempDir()
	stub, err := os.ReadFile(testkit.GoBuild(t, testkit.Build{Pkg: "./internal/scope/scopestub", Static: true}))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "scopestub"), stub, 0o755)
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY scopestub /scopestub\n"+
		`ENTRYPOINT ["/scopestub","--host","0.0.0.0","--port","8000","--load-delay","10ms"]`+"\n"), 0o644)
	tag := "scopectl-serve-test:" + deploytest.RandHex(4)
	if out, err := deploytest.Docker(ctx, "build", "--quiet", "--tag", tag, dir); err != nil {
		t.Fatalf("docker build: %v %s", err, out)
	}
	t.Cleanup(func() { deploytest.Docker(context.Background(), "image", "rm", "--force", tag) })
	name := "scopectl-serve-test-" + deploytest.RandHex(4)
	deploytest.RemoveContainerAtEnd(t, name)
	port := deploytest.FreePort(t)
	if out, err := deploytest.Docker(ctx, "run", "-d", "--name", name, "-p", fmt.Sprintf("127.0.0.1:%d:8000", port), tag); err != nil {
		t.Fatalf("docker run: %v %s", err, out)
	}
	scopeURL := fmt.Sprintf("http://127.0.0.1:%d", port)
	sc := &scope.Client{Base: scopeURL}
	if _, err := sc.WaitHealthy(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	// the host: a real sshd whose sessions run docker here
	home := t.TempDir()
	sshPort := testkit.StartSSHD(t, home, "")
	t.Setenv("HOME", home)
	t.Setenv("SSH_AUTH_SOCK", "")
	lib, err := library.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lib.Close() })
	addr := fmt.Sprintf("ssh://%s@127.0.0.1:%d", testkit.User(), sshPort)
	lib.Store.(store.PodStore).PutPod(ctx, store.Pod{RequestID: "sshhost-1", Provider: "ssh", ID: "gpubox", Name: "gpubox",
		Address: addr, Container: name, LastSeenStatus: "RUNNING", CreatedAt: time.Now()})
	srv, err := server.New(server.Options{Lib: lib, Token: mustSecret(canaryToken), OpenReads: true, Interval: time.Hour,
		LogEvery: 100 * time.Millisecond, RemoteEnv: remote.Env{KnownHosts: filepath.Join(home, ".ssh", "known_hosts")}})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, http: startHTTP(t, srv)}
	s := h.openSSE("/api/v1/pods/gpubox/logs", "")
	_, id := s.lines("listening on 0.0.0.0:8000")
	if !strings.HasPrefix(id, "t") {
		t.Fatalf("id %q: want t and a timestamp", id)
	}
	time.Sleep(20 * time.Millisecond) // docker stamps in nanoseconds: the next line is later
	if err := sc.LoadPipeline(ctx, "longlive", nil, nil); err != nil {
		t.Fatal(err)
	}
	got, id2 := s.lines("Pipeline longlive loaded")
	if strings.Contains(strings.Join(got, "\n"), "listening") {
		t.Errorf("old lines again: %q", got)
	}
	r := h.openSSE("/api/v1/pods/gpubox/logs", id2)
	r.quiet(500 * time.Millisecond)
	if err := sc.LoadPipeline(ctx, "streamdiffusionv2", nil, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.lines("Pipeline streamdiffusionv2 loaded"); strings.Contains(strings.Join(got, "\n"), "longlive") {
		t.Errorf("resumed stream repeats: %q", got)
	}
}

// A job on another machine: its train.log follows over SSH (Trainer.Logs, as `scopectl
// train logs -f`), here through a real sshd, with byte offsets as ids and the canary in
// the log redacted; a reconnect from an offset gets only what came after it.
func TestRemoteJobLogStream(t *testing.T) {
	ctx := context.Background()
	home := t.TempDir()
	sshPort := testkit.StartSSHD(t, home, "")
	t.Setenv("HOME", home)
	t.Setenv("SSH_AUTH_SOCK", "")
	lib, err := library.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lib.Close() })
	// the job's folder on "the training machine" (no spec.json: not a job of this machine)
	jobDir := t.TempDir()
	logPath := filepath.Join(jobDir, "train.log")
	os.WriteFile(logPath, []byte("loading model\nHF_TOKEN="+canaryHF+"\nstep 1\n"), 0o644)
	ts := lib.Store.(store.TrainStore)
	target := fmt.Sprintf("ssh://%s@127.0.0.1:%d", testkit.User(), sshPort)
	if err := ts.PutTrainJob(ctx, store.TrainJob{ID: "remote-job-1", Name: "remote", Target: target, JobDir: jobDir, Workspace: jobDir,
		Binary: filepath.Join(jobDir, "scopectl"), SaveDir: jobDir, Steps: 10, StartedAt: time.Now(), Phase: "training"}); err != nil {
		t.Fatal(err)
	}
	red := &secret.Redactor{}
	red.Add(secret.New(canaryHF))
	env := remote.Env{KnownHosts: filepath.Join(home, ".ssh", "known_hosts"), Options: map[string]string{}}
	srv, err := server.New(server.Options{Lib: lib, Token: mustSecret(canaryToken), OpenReads: true, Interval: time.Hour, Redactor: red,
		Trainer: &train.Trainer{Lib: lib, Jobs: ts, Env: env}})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, http: startHTTP(t, srv)}
	s := h.openSSE("/api/v1/jobs/remote-job-1/log/stream", "")
	got, id := s.lines("step 1")
	if len(got) != 3 || got[1] == "HF_TOKEN="+canaryHF || id != strconv.Itoa(len("loading model\nHF_TOKEN="+canaryHF+"\nstep 1\n")) {
		t.Fatalf("remote log: %q id %s", got, id)
	}
	f, _ := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("step 2\n")
	f.Close()
	if got, _ := s.lines("step 2"); len(got) != 1 {
		t.Errorf("then: %q", got)
	}
	r := h.openSSE("/api/v1/jobs/remote-job-1/log/stream", id)
	if got, _ := r.lines("step 2"); len(got) != 1 || got[0] != "step 2" {
		t.Errorf("resumed: %q", got)
	}
}
