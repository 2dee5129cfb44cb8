package croc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	crocclient "github.com/schollz/croc/v10/src/croc"
	"github.com/schollz/croc/v10/src/tcp"

	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/remote/remotetest"
	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/daydreamlive/scopectl/internal/testkit"
)

// canary is the code phrase of most tests; it must never show up in anything scopectl
// produces. wrongCode shares its first 4 bytes (same relay room) but not the rest.
const (
	canary    = "7391-canary-plum-zest-41"
	wrongCode = "7391-other-words-here-99"
	relayPass = "pass123"
)

// --- without a relay ---

func openRemote(t *testing.T, raw string, opts map[string]string, code string) (remote.Remote, *secret.Redactor, error) {
	t.Helper()
	red := &secret.Redactor{}
	env := remote.Env{
		Secrets: red,
		Lookup: func(k string) secret.Secret {
			if k == KeySecret {
				return secret.New(code)
			}
			return secret.Secret{}
		},
		Options: opts,
	}
	r, err := remote.Open(context.Background(), raw, env)
	return r, red, err
}

func TestOpen(t *testing.T) {
	r, red, err := openRemote(t, "croc://", nil, canary)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.String(); got != "croc://"+DefaultRelay {
		t.Errorf("String() = %q", got)
	}
	if got := red.Redact("x " + canary + " y"); strings.Contains(got, canary) {
		t.Errorf("the code phrase was not registered with env.Secrets: %q", got)
	}
	noCanary(t, "formatting the remote", fmt.Sprintf("%v %+v %#v %s", r, r, r, r))
	r, _, err = openRemote(t, "croc://relay.example:9100", map[string]string{OptRelayPass: "p", OptWait: "3s", OptParallel: "2"}, canary)
	if err != nil {
		t.Fatal(err)
	}
	cr := r.(*Remote)
	if cr.String() != "croc://relay.example:9100" || cr.cfg.RelayPassword != "p" || cr.cfg.Wait != 3*time.Second || cr.cfg.Parallel != 2 {
		t.Errorf("options not applied: %s %+v", cr, cr.cfg)
	}
	if r, _, err := openRemote(t, "croc://", map[string]string{OptRelay: "10.1.2.3"}, canary); err != nil || r.String() != "croc://10.1.2.3:9009" {
		t.Errorf("relay without port: %v %v", r, err)
	}
	for _, tc := range []struct {
		raw  string
		opts map[string]string
		code string
	}{
		{"croc://" + url.QueryEscape(canary) + "@relay.example", nil, canary},
		{"croc://relay.example/workspace/loras", nil, canary},
		{"croc://a.example", map[string]string{OptRelay: "b.example"}, canary},
		{"croc://", map[string]string{OptWait: "soon"}, canary},
		{"croc://", map[string]string{OptParallel: "0"}, canary},
		{"croc://", nil, ""},
		{"croc://", nil, "12345"},
	} {
		_, _, err := openRemote(t, tc.raw, tc.opts, tc.code)
		if err == nil {
			t.Errorf("Open %s %v with code %q succeeded", tc.raw, tc.opts, tc.code)
			continue
		}
		if strings.Contains(err.Error(), canary) || strings.Contains(err.Error(), url.QueryEscape(canary)) {
			t.Errorf("error shows the code phrase: %v", err)
		}
	}
}

func TestHonestCapabilitiesAndLocalChecks(t *testing.T) {
	// An unreachable relay: nothing here may get as far as the network.
	r, err := New(Config{Relay: "127.0.0.1:1", Secret: secret.New(canary), Wait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if es, err := r.List(ctx); es != nil || !errors.Is(err, ErrNotSupported) || !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("List: %v %v", es, err)
	}
	if err := r.Delete(ctx, "a.safetensors"); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Delete: %v", err)
	}
	b, sha := remotetest.Data(100000, 1)
	for _, n := range []string{"../escape.safetensors", "a/b.safetensors", "..", "", "x\x1b[31m.safetensors", `c:\x`} {
		if _, err := r.Put(ctx, n, remotetest.Src(b, sha), remote.PutOptions{}); !errors.Is(err, remote.ErrBadName) {
			t.Errorf("Put %q: %v", n, err)
		}
		if _, err := r.Get(ctx, n, 0); !errors.Is(err, remote.ErrBadName) {
			t.Errorf("Get %q: %v", n, err)
		}
		if err := r.Delete(ctx, n); !errors.Is(err, remote.ErrBadName) {
			t.Errorf("Delete %q: %v", n, err)
		}
	}
	_, wrong := remotetest.Data(10, 2)
	if _, err := r.Put(ctx, "x.safetensors", remotetest.Src(b, wrong), remote.PutOptions{}); !errors.Is(err, remote.ErrHashMismatch) {
		t.Errorf("Put with a wrong sha256: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	start := time.Now()
	if _, err := r.Put(cctx, "x.safetensors", remotetest.Src(b, sha), remote.PutOptions{}); !errors.Is(err, context.Canceled) || time.Since(start) > 5*time.Second {
		t.Errorf("Put with a cancelled context: %v after %s", err, time.Since(start))
	}
	if _, err := r.Put(ctx, "x.safetensors", remotetest.Src(b, sha), remote.PutOptions{}); err == nil || strings.Contains(err.Error(), canary) {
		t.Errorf("Put to an unreachable relay: %v", err)
	}
}

func TestWantedChunks(t *testing.T) {
	if w, err := wantedChunks(nil, 10); w != nil || err != nil {
		t.Errorf("empty request: %v %v", w, err)
	}
	w, err := wantedChunks([]int64{chunkSize, 2 * chunkSize, 3, 10 * chunkSize, 1}, 11*chunkSize)
	if err != nil || len(w) != 4 || !w[2*chunkSize] || !w[4*chunkSize] || !w[10*chunkSize] || w[5*chunkSize] {
		t.Errorf("ranges: %v %v", w, err)
	}
	for _, bad := range [][]int64{{1000, 0, 1}, {chunkSize, 5, 1}, {chunkSize, 0, 99}, {chunkSize, 0}, {chunkSize, -chunkSize, 1}} {
		if _, err := wantedChunks(bad, 4*chunkSize); err == nil {
			t.Errorf("accepted %v", bad)
		}
	}
}

// The package must not pull in croc's Client, relay or models packages: their init
// functions do DNS look-ups and their code prints the code phrase.
func TestNoCrocInitSideEffects(t *testing.T) {
	gobin := goTool(t)
	list := exec.Command(gobin, "list", "-deps", ".")
	list.Env = testkit.GoEnv()
	out, err := list.CombinedOutput()
	if err != nil {
		t.Skipf("go list: %v\n%s", err, out)
	}
	for _, p := range []string{"src/croc", "src/tcp", "src/models", "src/cli"} {
		if bytes.Contains(out, []byte("github.com/schollz/croc/v10/"+p+"\n")) {
			t.Errorf("the croc remote depends on github.com/schollz/croc/v10/%s", p)
		}
	}
}

// --- against a real relay and the real croc CLI ---

func goTool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool")
	}
	return p
}

func TestMain(m *testing.M) {
	// croc's logger keeps its level in unguarded globals that its relay code sets from
	// every port's goroutine; with LOGGER set, SetLevel leaves them alone (no data race
	// under -race). The remote discards the logger's output anyway.
	os.Setenv("LOGGER", "error")
	silenceLogs()
	testkit.Main(m)
}

// crocCLI builds the croc CLI of the version in go.mod (a tool dependency, so it builds
// offline from the module cache), once per test process. Without it the CLI tests skip,
// except in CI, where they fail.
func crocCLI(t *testing.T) string {
	t.Helper()
	_, err := exec.LookPath("go")
	testkit.Need(t, err == nil, "no go tool to build the croc CLI")
	return testkit.GoBuild(t, testkit.Build{Pkg: "github.com/schollz/croc/v10"})
}

func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var ls []net.Listener
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// startRelay runs croc's own relay code in this process, as `croc relay` does: a control
// port whose banner lists two transfer ports. (croc's relay binds 0.0.0.0 when asked
// for 127.0.0.1; everything here connects over loopback.) Each transfer gets a relay of
// its own: croc's relay keeps rooms by name and cleans them up asynchronously, so a
// transfer that follows the previous one with the same code phrase within moments can
// be wired to its leftovers (seen under the race detector).
func startRelay(t *testing.T) string {
	t.Helper()
	ports := freePorts(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i, p := range ports {
		banner := []string{}
		if i == 0 {
			banner = []string{strings.Join(ports[1:], ",")}
		}
		wg.Go(func() { tcp.RunCtx(ctx, "error", "127.0.0.1", p, relayPass, banner...) })
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, p := range ports {
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+p, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("relay port %s did not come up: %v", p, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return "127.0.0.1:" + ports[0]
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testkit.SyncBuffer

type cliRun struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

// startCLI runs the croc CLI in dir with the code phrase in CROC_SECRET, as users do,
// in a private config dir (no remembered settings) and a clean environment.
func startCLI(t *testing.T, dir, code string, args ...string) *cliRun {
	t.Helper()
	bin := crocCLI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, bin, args...)
	testkit.KillWithParent(cmd)
	cmd.Dir = dir
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"CROC_CONFIG_DIR=" + filepath.Join(home, "croc"),
		"CROC_SECRET=" + code,
	}
	cmd.WaitDelay = 2 * time.Second
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if strings.Contains(strings.Join(cmd.Args, " "), code) {
		t.Fatalf("the code phrase is on the croc command line: %q", cmd.Args)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	run := &cliRun{cmd: cmd, out: out, done: make(chan error, 1)}
	go func() { run.done <- cmd.Wait(); cancel() }()
	t.Cleanup(func() {
		cancel()
		<-run.done
		t.Logf("croc %s:\n%s", strings.Join(args, " "), lastLines(out.String(), 12))
	})
	return run
}

// lastLines trims progress bars off the CLI's output for the log.
func lastLines(s string, n int) string {
	s = strings.ReplaceAll(s, "\r", "\n")
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.Contains(l, "%") {
			keep = append(keep, l)
		}
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return strings.Join(keep, "\n")
}

func (c *cliRun) waitOutput(t *testing.T, substr string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(c.out.String(), substr) {
		if time.Now().After(deadline) {
			t.Fatalf("croc CLI did not print %q within %s:\n%s", substr, d, c.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *cliRun) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-c.done:
		c.done <- err // for the cleanup
		return err
	case <-time.After(d):
		t.Fatalf("croc CLI still running after %s:\n%s", d, c.out.String())
		return nil
	}
}

// quietly runs f with os.Stdout and os.Stderr captured and fails if anything was
// written: the croc remote prints nothing (croc's Client would print the code phrase).
func quietly(t *testing.T, f func()) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	oldOut, oldErr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = w, w
	got := make(chan string)
	go func() { b, _ := io.ReadAll(r); got <- string(b) }()
	defer func() {
		os.Stdout, os.Stderr = oldOut, oldErr
		w.Close()
		if out := <-got; out != "" {
			t.Errorf("the croc remote wrote to stdout/stderr: %q", out)
		}
		r.Close()
	}()
	f()
}

func noCanary(t *testing.T, what string, s string) {
	t.Helper()
	if strings.Contains(s, canary) {
		t.Errorf("%s shows the code phrase: %q", what, s)
	}
}

// handshakeEvents records which way senderHandshake goes.
func handshakeEvents(t *testing.T) func() []string {
	var mu sync.Mutex
	var got []string
	testEvent = func(e string) { mu.Lock(); got = append(got, e); mu.Unlock() }
	t.Cleanup(func() { testEvent = nil })
	return func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(got) }
}

func newRemote(t *testing.T, relay, code string, mod func(*Config)) *Remote {
	t.Helper()
	cfg := Config{Relay: relay, Secret: secret.New(code), Wait: 20 * time.Second, TempDir: t.TempDir()}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	noCanary(t, "String()", r.String())
	return r
}

func TestPutToCrocCLI(t *testing.T) {
	crocCLI(t)
	data, sha := remotetest.Data(3<<20+12345, 11)
	const name = "lora.safetensors"

	put := func(t *testing.T, r remote.Remote) (remote.PutResult, *bytes.Buffer, error) {
		t.Helper()
		var prog bytes.Buffer
		var res remote.PutResult
		var err error
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		quietly(t, func() { res, err = r.Put(ctx, name, remotetest.Src(data, sha), remote.PutOptions{Progress: &prog}) })
		if err != nil {
			noCanary(t, "Put error", err.Error())
		}
		return res, &prog, err
	}
	received := func(t *testing.T, dir string, cli *cliRun) {
		t.Helper()
		if err := cli.wait(t, 20*time.Second); err != nil {
			t.Fatalf("croc CLI: %v", err)
		}
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("the croc CLI received other bytes (%d of %d, %v)", len(got), len(data), err)
		}
	}

	dir := t.TempDir()
	// The usual order: the pod's croc waits, then scopectl sends. (croc CLI to croc CLI
	// fails in this order; see senderHandshake.)
	t.Run("ReceiverFirst", func(t *testing.T) {
		relay := startRelay(t)
		r, _, err := openRemote(t, "croc://", map[string]string{OptRelay: relay, OptWait: "20s"}, canary)
		if err != nil {
			t.Fatal(err)
		}
		cli := startCLI(t, dir, canary, "--yes", "--overwrite", "--relay", relay)
		cli.waitOutput(t, "securing channel", 15*time.Second) // in the room, query abandoned
		events := handshakeEvents(t)
		res, prog, err := put(t, r)
		if ev := events(); !slices.Equal(ev, []string{"stale address query"}) {
			t.Errorf("handshake went %v", ev)
		}
		if err != nil {
			t.Fatal(err)
		}
		if res.Sent != int64(len(data)) || res.Resumed != 0 || prog.Len() != len(data) {
			t.Fatalf("PutResult %+v, progress %d bytes", res, prog.Len())
		}
		received(t, dir, cli)
	})

	// The peer already has the file: croc hashes it and asks for nothing.
	t.Run("AlreadyThere", func(t *testing.T) {
		relay := startRelay(t)
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		r := newRemote(t, relay, canary, nil)
		cli := startCLI(t, dir, canary, "--yes", "--overwrite", "--relay", relay)
		cli.waitOutput(t, "securing channel", 15*time.Second)
		res, prog, err := put(t, r)
		if err != nil {
			t.Fatal(err)
		}
		if res.Sent != 0 || res.Resumed != int64(len(data)) || prog.Len() != 0 {
			t.Fatalf("PutResult %+v, progress %d", res, prog.Len())
		}
		received(t, dir, cli)
	})

	// An interrupted croc receive leaves the full size with zero chunks at the final
	// name; croc --overwrite asks for just those.
	t.Run("ResumesPartialFile", func(t *testing.T) {
		relay := startRelay(t)
		partial := bytes.Clone(data)
		clear(partial[2*chunkSize : 5*chunkSize])
		clear(partial[len(partial)/chunkSize*chunkSize:]) // the last, short chunk
		if err := os.WriteFile(filepath.Join(dir, name), partial, 0o644); err != nil {
			t.Fatal(err)
		}
		r := newRemote(t, relay, canary, nil)
		cli := startCLI(t, dir, canary, "--yes", "--overwrite", "--relay", relay)
		cli.waitOutput(t, "securing channel", 15*time.Second)
		res, _, err := put(t, r)
		if err != nil {
			t.Fatal(err)
		}
		if want := int64(3*chunkSize + len(data)%chunkSize); res.Sent != want || res.Resumed != int64(len(data))-want {
			t.Fatalf("PutResult %+v, want %d sent", res, want)
		}
		received(t, dir, cli)
	})
	// scopectl first: the receiver's LAN address query is live and gets answered.
	t.Run("SenderFirstOneConnection", func(t *testing.T) {
		relay := startRelay(t)
		dir := t.TempDir()
		r := newRemote(t, relay, canary, func(c *Config) { c.Parallel = 1 })
		events := handshakeEvents(t)
		type result struct {
			res remote.PutResult
			err error
		}
		done := make(chan result, 1)
		var prog *bytes.Buffer
		go func() {
			var res remote.PutResult
			var err error
			res, prog, err = put(t, r)
			done <- result{res, err}
		}()
		time.Sleep(500 * time.Millisecond)
		cli := startCLI(t, dir, canary, "--yes", "--overwrite", "--relay", relay)
		res := <-done
		if res.err != nil {
			t.Fatal(res.err)
		}
		if res.res.Sent != int64(len(data)) || prog.Len() != len(data) {
			t.Fatalf("PutResult %+v, progress %d", res.res, prog.Len())
		}
		if ev := events(); !slices.Equal(ev, []string{"answered address query"}) {
			t.Errorf("handshake went %v", ev)
		}
		received(t, dir, cli)
	})

}

func TestGetFromCrocCLI(t *testing.T) {
	crocCLI(t)
	data, _ := remotetest.Data(3<<20+777, 12)
	const name = "trained.safetensors"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
	sendArgs := func(relay string) []string { return []string{"--relay", relay, "send", "--no-local", name} }

	get := func(t *testing.T, r *Remote, off int64) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var got []byte
		quietly(t, func() {
			rc, err := r.Get(ctx, name, off)
			if err != nil {
				noCanary(t, "Get error", err.Error())
				t.Errorf("Get: %v", err)
				return
			}
			got, err = io.ReadAll(rc)
			if err != nil {
				t.Errorf("read: %v", err)
			}
			if err := rc.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		if left, _ := os.ReadDir(r.cfg.TempDir); len(left) != 0 {
			t.Errorf("temporary files left after Close: %v", left)
		}
		return got
	}
	check := func(t *testing.T, cli *cliRun, got, want []byte) {
		t.Helper()
		if !bytes.Equal(got, want) {
			t.Fatalf("Get returned other bytes (%d, want %d)", len(got), len(want))
		}
		if err := cli.wait(t, 20*time.Second); err != nil {
			t.Fatalf("croc send: %v", err)
		}
	}

	t.Run("SenderFirst", func(t *testing.T) {
		relay := startRelay(t)
		r := newRemote(t, relay, canary, nil)
		cli := startCLI(t, dir, canary, sendArgs(relay)...)
		cli.waitOutput(t, "Code is", 15*time.Second)
		time.Sleep(300 * time.Millisecond)
		check(t, cli, get(t, r, 0), data)
	})
	t.Run("ReceiverFirstWithOffset", func(t *testing.T) {
		relay := startRelay(t)
		r := newRemote(t, relay, canary, nil)
		got := make(chan []byte, 1)
		go func() { got <- get(t, r, 123457) }()
		time.Sleep(500 * time.Millisecond)
		cli := startCLI(t, dir, canary, sendArgs(relay)...)
		check(t, cli, <-got, data[123457:])
	})
	// croc's other hash algorithms, and uncompressed chunks.
	t.Run("MD5Uncompressed", func(t *testing.T) {
		relay := startRelay(t)
		r := newRemote(t, relay, canary, nil)
		cli := startCLI(t, dir, canary, "--relay", relay, "--no-compress", "send", "--no-local", "--hash", "md5", name)
		cli.waitOutput(t, "Code is", 15*time.Second)
		check(t, cli, get(t, r, 0), data)
	})
	t.Run("OtherFileRefused", func(t *testing.T) {
		relay := startRelay(t)
		r := newRemote(t, relay, canary, nil)
		cli := startCLI(t, dir, canary, sendArgs(relay)...)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := r.Get(ctx, "wanted.safetensors", 0)
		if !errors.Is(err, remote.ErrNotFound) || !strings.Contains(err.Error(), name) {
			t.Fatalf("Get of a file the peer does not offer: %v", err)
		}
		noCanary(t, "error", err.Error())
		if err := cli.wait(t, 20*time.Second); err == nil {
			t.Error("croc send succeeded although refused")
		}
	})
}

func TestWrongCodePhrase(t *testing.T) {
	crocCLI(t)
	data, sha := remotetest.Data(200000, 13)
	bound := 20 * time.Second

	t.Run("PutSameRoom", func(t *testing.T) {
		relay := startRelay(t) // a room of its own: failed transfers leave dead connections in the relay for a moment
		dir := t.TempDir()
		cli := startCLI(t, dir, wrongCode, "--yes", "--overwrite", "--relay", relay)
		cli.waitOutput(t, "securing channel", 15*time.Second)
		r := newRemote(t, relay, canary, nil)
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		start := time.Now()
		_, err := r.Put(ctx, "x.safetensors", remotetest.Src(data, sha), remote.PutOptions{})
		if !errors.Is(err, ErrCodeMismatch) {
			t.Fatalf("Put to a peer with another code phrase: %v after %s", err, time.Since(start))
		}
		noCanary(t, "error", err.Error())
		if strings.Contains(err.Error(), wrongCode) {
			t.Errorf("error shows the peer's code phrase: %v", err)
		}
		cli.wait(t, bound)
		if _, err := os.Stat(filepath.Join(dir, "x.safetensors")); err == nil {
			t.Error("the peer wrote the file although the key exchange failed")
		}
	})
	t.Run("PutSameRoomSenderFirst", func(t *testing.T) {
		relay := startRelay(t)
		r := newRemote(t, relay, canary, nil)
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			_, err := r.Put(ctx, "x.safetensors", remotetest.Src(data, sha), remote.PutOptions{})
			errc <- err
		}()
		time.Sleep(300 * time.Millisecond)
		cli := startCLI(t, t.TempDir(), wrongCode, "--yes", "--overwrite", "--relay", relay)
		if err := <-errc; !errors.Is(err, ErrCodeMismatch) {
			t.Fatalf("Put: %v", err)
		} else {
			noCanary(t, "error", err.Error())
		}
		cli.wait(t, bound)
	})
	t.Run("GetSameRoom", func(t *testing.T) {
		relay := startRelay(t)
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "x.safetensors"), data, 0o644)
		cli := startCLI(t, dir, wrongCode, "--relay", relay, "send", "--no-local", "x.safetensors")
		r := newRemote(t, relay, canary, nil)
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		_, err := r.Get(ctx, "x.safetensors", 0)
		if !errors.Is(err, ErrCodeMismatch) {
			t.Fatalf("Get from a peer with another code phrase: %v", err)
		}
		noCanary(t, "error", err.Error())
		if err := cli.wait(t, bound); err == nil {
			t.Error("croc send succeeded with another code phrase")
		}
		if left, _ := os.ReadDir(r.cfg.TempDir); len(left) != 0 {
			t.Errorf("temporary files left: %v", left)
		}
	})
	t.Run("OtherRoomTimesOut", func(t *testing.T) {
		relay := startRelay(t)
		// Another code phrase altogether: the peers never meet; the wait bounds it.
		startCLI(t, t.TempDir(), "8888-entirely-different", "--yes", "--overwrite", "--relay", relay)
		r := newRemote(t, relay, canary, func(c *Config) { c.Wait = 2 * time.Second })
		start := time.Now()
		_, err := r.Put(context.Background(), "x.safetensors", remotetest.Src(data, sha), remote.PutOptions{})
		if !errors.Is(err, ErrNoPeer) || time.Since(start) > 10*time.Second {
			t.Fatalf("Put with nobody in the room: %v after %s", err, time.Since(start))
		}
		noCanary(t, "error", err.Error())
		_, err = r.Get(context.Background(), "x.safetensors", 0)
		if !errors.Is(err, ErrNoPeer) {
			t.Fatalf("Get with nobody in the room: %v", err)
		}
	})
	t.Run("CancelWhileWaiting", func(t *testing.T) {
		relay := startRelay(t)
		r := newRemote(t, relay, canary, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := r.Get(ctx, "x.safetensors", 0)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
			t.Fatalf("Get with an expiring context: %v after %s", err, time.Since(start))
		}
	})
	t.Run("WrongRelayPassword", func(t *testing.T) {
		relay := startRelay(t)
		r := newRemote(t, relay, canary, func(c *Config) { c.RelayPassword = "not-the-pass" })
		_, err := r.Get(context.Background(), "x.safetensors", 0)
		if err == nil || !strings.Contains(err.Error(), "relay password") {
			t.Fatalf("Get with a wrong relay password: %v", err)
		}
	})
}

// A hostile sender (croc's own client, which lets the file name be anything) offers a
// name that climbs out of the folder. Get refuses it before creating any file.
func TestHostileOfferedName(t *testing.T) {
	base := t.TempDir()
	srcDir := filepath.Join(base, "a", "b")
	if err := os.MkdirAll(srcDir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, _ := remotetest.Data(100000, 14)
	if err := os.WriteFile(filepath.Join(base, "evil.safetensors"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	const code = "5150-hostile-sender-code"
	for _, tc := range []struct{ name, folder string }{
		{"../../evil.safetensors", "./"},
		{"evil.safetensors", "../../"},
	} {
		t.Run(tc.folder+tc.name, func(t *testing.T) {
			relay := startRelay(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			sender, err := crocclient.NewCtx(ctx, crocclient.Options{
				IsSender: true, SharedSecret: code, RelayAddress: relay, RelayPassword: relayPass,
				DisableLocal: true, NoPrompt: true, DisableClipboard: true, Curve: "p256", HashAlgorithm: "xxhash",
			})
			if err != nil {
				t.Fatal(err)
			}
			folderSource := srcDir
			if tc.folder != "./" {
				folderSource = base // the file the client reads is base/evil.safetensors
			}
			sent := make(chan error, 1)
			go func() {
				sent <- sender.Send([]crocclient.FileInfo{{
					Name: tc.name, FolderRemote: tc.folder, FolderSource: folderSource,
					Size: int64(len(data)), ModTime: time.Now(), Mode: 0o644,
				}}, nil, 0)
			}()
			r := newRemote(t, relay, code, nil)
			_, err = r.Get(ctx, "evil.safetensors", 0)
			if !errors.Is(err, remote.ErrBadName) {
				t.Fatalf("Get of a hostile offer: %v", err)
			}
			select {
			case err := <-sent:
				if err == nil {
					t.Error("the hostile sender thinks it succeeded")
				}
			case <-time.After(15 * time.Second):
				t.Error("the hostile sender was not told to stop")
			}
			if left, _ := os.ReadDir(r.cfg.TempDir); len(left) != 0 {
				t.Errorf("files created: %v", left)
			}
			filepath.WalkDir(filepath.Dir(base), func(p string, d os.DirEntry, err error) error {
				if err == nil && d.Name() == "evil.safetensors" && p != filepath.Join(base, "evil.safetensors") {
					t.Errorf("written outside: %s", p)
				}
				return nil
			})
		})
	}
}

// Cancelling a Put mid-transfer stops it at once. What the receiving croc CLI keeps is
// croc's business: it wrote straight to the final name (see the package comment), so
// there may be a file of the full size with holes; it must not be the content.
func TestInterruptedPut(t *testing.T) {
	crocCLI(t)
	relay := startRelay(t)
	data, sha := remotetest.Data(8<<20, 15)
	dir := t.TempDir()
	cli := startCLI(t, dir, canary, "--yes", "--overwrite", "--relay", relay)
	cli.waitOutput(t, "securing channel", 15*time.Second)
	r := newRemote(t, relay, canary, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stopper := &cancelAfter{n: 256 << 10, cancel: cancel}
	start := time.Now()
	_, err := r.Put(ctx, "big.safetensors", remotetest.Src(data, sha), remote.PutOptions{Progress: stopper})
	if !errors.Is(err, context.Canceled) || time.Since(start) > 10*time.Second {
		t.Fatalf("Put cancelled mid-transfer: %v after %s", err, time.Since(start))
	}
	if err := cli.wait(t, 20*time.Second); err == nil {
		t.Error("the croc CLI reports success for an interrupted transfer")
	}
	got, err := os.ReadFile(filepath.Join(dir, "big.safetensors"))
	t.Logf("the croc CLI left big.safetensors: %d bytes (%v) of %d", len(got), err, len(data))
	if err == nil && bytes.Equal(got, data) {
		t.Error("an interrupted transfer left the complete content")
	}
}

type cancelAfter struct {
	mu     sync.Mutex
	n      int
	cancel func()
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n -= len(p); c.n <= 0 {
		c.cancel()
	}
	return len(p), nil
}

// A peer that joins and then says nothing is given up on after the stall timeout.
func TestStalledPeer(t *testing.T) {
	relay := startRelay(t)
	defer func(d time.Duration) { stallTimeout = d }(stallTimeout)
	stallTimeout = time.Second
	r := newRemote(t, relay, canary, nil)
	peer := newRemote(t, relay, canary, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := peer.join(ctx, ErrNoPeer)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if err := s.ctrl.Send(handshakeRequest); err != nil { // then silence
		t.Fatal(err)
	}
	data, sha := remotetest.Data(1000, 16)
	start := time.Now()
	_, err = r.Put(ctx, "x.safetensors", remotetest.Src(data, sha), remote.PutOptions{})
	if err == nil || !strings.Contains(err.Error(), "no progress") || time.Since(start) > 10*time.Second {
		t.Fatalf("Put to a silent peer: %v after %s", err, time.Since(start))
	}
}
