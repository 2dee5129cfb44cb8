package runpod

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod/runpodtest"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// Canaries: if either shows up in an error, a message or a printed pod, a secret leaked.
const (
	testKey     = "rpa_" + "TESTKEY0000000000000000000000000000"
	canaryKey   = "rpa_" + "CANARYKEYZZZZZZZZZZZZZZZZZZZZZZZZZ9"
	canaryToken = "hf_" + "CANARYTOKENQQQQQQQQQQQQQQQQQQQ7"
	sshKey      = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDtestkeytestkeytestkeytestkeytest user@host"
	gpu4090     = "NVIDIA GeForce RTX 4090"
)

func newFake(t *testing.T, mod ...func(*runpodtest.Options)) *runpodtest.Server {
	t.Helper()
	o := runpodtest.Options{APIKey: testKey, BootDelay: 20 * time.Millisecond}
	for _, m := range mod {
		m(&o)
	}
	return runpodtest.New(t, o)
}

func newClient(t *testing.T, s *runpodtest.Server, mod ...func(*Options)) *Client {
	t.Helper()
	o := Options{
		APIKey: secret.New(testKey), APIURL: s.RESTURL(), GraphQLURL: s.GraphQLURL(),
		RequestTimeout: 2 * time.Second, CreateTimeout: 2 * time.Second, MaxAttempts: 5,
		MinBackoff: 2 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		SettleWindow: 150 * time.Millisecond,
	}
	for _, m := range mod {
		m(&o)
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testSpec(reqID string) provider.CreateSpec {
	return provider.CreateSpec{
		Name: "wan-train", GPUType: gpu4090, Image: "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04",
		VolumeGB: 40, ContainerDiskGB: 30, Ports: []string{"8000/http"},
		Env:          map[string]string{"SCOPE_PORT": "8000"},
		SecretEnv:    map[string]secret.Secret{"HF_TOKEN": secret.New(canaryToken)},
		SSHPublicKey: sshKey, RequestID: reqID,
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// noLeak fails if any secret shows in s.
func noLeak(t *testing.T, what, s string) {
	t.Helper()
	for _, c := range []string{testKey, canaryKey, canaryToken, testKey[len(testKey)-12:], canaryKey[len(canaryKey)-12:], canaryToken[len(canaryToken)-12:]} {
		if strings.Contains(s, c) {
			t.Errorf("%s leaks a secret (%q…): %s", what, c[:6], s)
		}
	}
}

func errLine(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if strings.ContainsAny(err.Error(), "\n\r") {
		t.Errorf("error is not one line: %q", err.Error())
	}
	if !strings.HasPrefix(err.Error(), "runpod: ") || strings.Count(err.Error(), "runpod: ") != 1 {
		t.Errorf("error should say \"runpod: \" once, at the start: %q", err.Error())
	}
	noLeak(t, "error", err.Error())
}

func waitRunning(t *testing.T, c *Client, id string) *provider.Pod {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p, err := c.Get(ctxT(t), id)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, ok := p.SSH(); ok && p.Status == provider.StatusRunning {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s never came up: %+v", id, p)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func onlyPod(t *testing.T, s *runpodtest.Server) runpodtest.PodView {
	t.Helper()
	pods := s.Pods()
	if len(pods) != 1 || s.Creates() != 1 {
		t.Fatalf("want exactly one pod, server has %d (%d created): %+v", len(pods), s.Creates(), pods)
	}
	return pods[0]
}

func TestRoundTrip(t *testing.T) {
	s := newFake(t)
	c := newClient(t, s)
	ctx := ctxT(t)
	reqID := provider.NewRequestID()

	pod, err := c.Create(ctx, testSpec(reqID))
	if err != nil {
		t.Fatal(err)
	}
	if pod.Tag != reqID || pod.Name != "wan-train-"+reqID || pod.GPUType != gpu4090 || pod.GPUCount != 1 {
		t.Errorf("created pod: %+v", pod)
	}
	if pod.CostPerHr != 0.69 || pod.VolumeGB != 40 || pod.CreatedAt.IsZero() || pod.Image == "" {
		t.Errorf("created pod: %+v", pod)
	}
	if pod.Env["HF_TOKEN"] != provider.SecretValue || pod.Env["SCOPE_PORT"] != "8000" || pod.Env["PUBLIC_KEY"] != sshKey {
		t.Errorf("env not masked as expected: %v", pod.Env)
	}
	noLeak(t, "printed pod", fmt.Sprintf("%+v %#v", pod, pod))

	// What RunPod received: the secret (the pod needs it), the tag, the SSH key.
	sp := onlyPod(t, s)
	if sp.Env["HF_TOKEN"] != canaryToken || sp.Env[provider.EnvRequestID] != reqID ||
		sp.Env[provider.EnvSecretNames] != "HF_TOKEN" || sp.Env["PUBLIC_KEY"] != sshKey || sp.Env["SSH_PUBLIC_KEY"] != sshKey {
		t.Errorf("server env: %v", sp.Env)
	}
	if strings.Join(sp.Ports, ",") != "8000/http,22/tcp" || sp.Cloud != "SECURE" {
		t.Errorf("server ports %v cloud %s", sp.Ports, sp.Cloud)
	}
	for _, r := range s.Requests() {
		if !r.Authed {
			t.Errorf("%s sent without the key", r.Route)
		}
	}

	up := waitRunning(t, c, pod.ID)
	host, port1, _ := up.SSH()
	if host == "" || up.Ports["8000/http"] != 0 {
		t.Errorf("running pod: %+v", up)
	}

	list, err := c.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != pod.ID || list[0].Tag != reqID || list[0].GPUType != gpu4090 {
		t.Fatalf("list: %v %+v", err, list)
	}
	noLeak(t, "listed pod", fmt.Sprintf("%+v", list))

	// A second Create with the same request id is the same pod.
	again, err := c.Create(ctx, testSpec(reqID))
	if err != nil || again.ID != pod.ID {
		t.Fatalf("create again: %v %+v", err, again)
	}
	onlyPod(t, s)

	if err := c.Stop(ctx, pod.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(ctx, pod.ID); err != nil {
		t.Fatalf("stopping a stopped pod: %v", err)
	}
	st, err := c.Get(ctx, pod.ID)
	if err != nil || st.Status != provider.StatusExited || st.PublicIP != "" || len(st.Ports) != 0 {
		t.Fatalf("stopped pod: %v %+v", err, st)
	}

	if err := c.Start(ctx, pod.ID); err != nil {
		t.Fatal(err)
	}
	up = waitRunning(t, c, pod.ID)
	if _, port2, _ := up.SSH(); port2 == port1 {
		t.Errorf("the SSH port should change on restart (both %d)", port1)
	}

	if err := c.Terminate(ctx, pod.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, pod.ID); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("get after terminate: %v", err)
	} else {
		errLine(t, err)
	}
	if err := c.Terminate(ctx, pod.ID); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("terminate twice: %v", err)
	}
	if err := c.Start(ctx, pod.ID); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("start a terminated pod: %v", err)
	}
	if list, err := c.List(ctx); err != nil || len(list) != 0 || len(s.Pods()) != 0 {
		t.Fatalf("after terminate: %v %+v", err, list)
	}
}

// The crash between request and answer: RunPod created the pod, the connection died
// before the answer. Create finds the pod instead of creating another.
func TestCreateIdempotentDropAfterApply(t *testing.T) {
	s := newFake(t)
	c := newClient(t, s)
	s.Inject(runpodtest.Fault{Route: "POST /pods", Kind: runpodtest.DropAfterApply})
	reqID := provider.NewRequestID()
	pod, err := c.Create(ctxT(t), testSpec(reqID))
	if err != nil {
		t.Fatal(err)
	}
	sp := onlyPod(t, s)
	if pod.ID != sp.ID || pod.Tag != reqID || s.Count("POST /pods") != 1 {
		t.Errorf("pod %+v, server %+v, %d POSTs", pod, sp, s.Count("POST /pods"))
	}
}

// RunPod's POST /pods has created the pod and then answered 500.
func TestCreateIdempotentErrorAfterApply(t *testing.T) {
	s := newFake(t)
	c := newClient(t, s)
	s.Inject(runpodtest.Fault{Route: "POST /pods", Kind: runpodtest.ErrorAfterApply, Times: 3})
	pod, err := c.Create(ctxT(t), testSpec(provider.NewRequestID()))
	if err != nil {
		t.Fatal(err)
	}
	if sp := onlyPod(t, s); sp.ID != pod.ID || s.Count("POST /pods") != 1 {
		t.Errorf("%d POSTs", s.Count("POST /pods"))
	}
}

// A create slower than the client's timeout is applied after the client gave up on
// the answer; Create waits for it to appear instead of sending another.
func TestCreateSlow(t *testing.T) {
	s := newFake(t)
	c := newClient(t, s, func(o *Options) {
		o.CreateTimeout = 80 * time.Millisecond
		o.SettleWindow = 3 * time.Second
	})
	s.Inject(runpodtest.Fault{Route: "POST /pods", Kind: runpodtest.Delay, Delay: 400 * time.Millisecond})
	pod, err := c.Create(ctxT(t), testSpec(provider.NewRequestID()))
	if err != nil {
		t.Fatal(err)
	}
	if sp := onlyPod(t, s); sp.ID != pod.ID || s.Count("POST /pods") != 1 {
		t.Errorf("%d POSTs", s.Count("POST /pods"))
	}
}

// Failures that applied nothing are retried, and still one pod results.
func TestCreateRetries(t *testing.T) {
	s := newFake(t)
	c := newClient(t, s)
	s.Inject(runpodtest.Fault{Route: "POST /pods", Kind: runpodtest.RateLimit})
	s.Inject(runpodtest.Fault{Route: "POST /pods", Kind: runpodtest.ServerError, Status: 503, Times: 2})
	s.Inject(runpodtest.Fault{Route: "POST /pods", Kind: runpodtest.DropBeforeApply})
	s.Inject(runpodtest.Fault{Route: "GET /pods", Kind: runpodtest.ServerError, Status: 502})
	pod, err := c.Create(ctxT(t), testSpec(provider.NewRequestID()))
	if err != nil {
		t.Fatal(err)
	}
	if sp := onlyPod(t, s); sp.ID != pod.ID || s.Count("POST /pods") != 5 {
		t.Errorf("%d POSTs, want 5", s.Count("POST /pods"))
	}
}

// A run that died mid-create (here: its context ended while RunPod was still
// creating) leaves a pod; the next run, in a fresh client, finds it by request id.
func TestCreateAfterCrash(t *testing.T) {
	s := newFake(t)
	s.Inject(runpodtest.Fault{Route: "POST /pods", Kind: runpodtest.Delay, Delay: 300 * time.Millisecond})
	reqID := provider.NewRequestID()

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := newClient(t, s).Create(ctx, testSpec(reqID))
	if !errors.Is(err, provider.ErrOutcomeUnknown) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("interrupted create: %v", err)
	}
	errLine(t, err)
	time.Sleep(400 * time.Millisecond) // RunPod finishes the create

	pod, err := newClient(t, s).Create(ctxT(t), testSpec(reqID))
	if err != nil {
		t.Fatal(err)
	}
	if sp := onlyPod(t, s); sp.ID != pod.ID || s.Count("POST /pods") != 1 {
		t.Errorf("%d POSTs", s.Count("POST /pods"))
	}
}

// Concurrent Creates with one request id in one process make one pod.
func TestCreateConcurrentSameID(t *testing.T) {
	s := newFake(t)
	c := newClient(t, s)
	s.Inject(runpodtest.Fault{Route: "POST /pods", Kind: runpodtest.DropAfterApply})
	reqID := provider.NewRequestID()
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := c.Create(ctxT(t), testSpec(reqID))
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = p.ID
		}()
	}
	wg.Wait()
	sp := onlyPod(t, s)
	for _, id := range ids {
		if id != sp.ID {
			t.Errorf("got pod %s, want %s", id, sp.ID)
		}
	}
}

// When every attempt may have been applied but nothing shows up, Create stops after
// MaxAttempts POSTs and says the outcome is unknown.
func TestCreateGivesUp(t *testing.T) {
	s := newFake(t)
	c := newClient(t, s, func(o *Options) { o.MaxAttempts = 3; o.SettleWindow = 20 * time.Millisecond })
	s.Inject(runpodtest.Fault{Route: "POST /pods", Kind: runpodtest.ServerError, Status: 500, Times: -1})
	start := time.Now()
	_, err := c.Create(ctxT(t), testSpec(provider.NewRequestID()))
	if !errors.Is(err, provider.ErrOutcomeUnknown) {
		t.Fatalf("want ErrOutcomeUnknown, got %v", err)
	}
	errLine(t, err)
	if n := s.Count("POST /pods"); n != 3 || s.Creates() != 0 {
		t.Errorf("%d POSTs (want 3), %d created", n, s.Creates())
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
}

// A 429 storm: bounded attempts, bounded time (a long Retry-After is capped), a
// clear error; nothing created.
func Test429StormBounded(t *testing.T) {
	s := newFake(t)
	c := newClient(t, s, func(o *Options) { o.MaxAttempts = 4 })
	s.Inject(runpodtest.Fault{Route: "*", Kind: runpodtest.RateLimit, Times: -1, RetryAfter: "30"})
	start := time.Now()
	_, err := c.List(ctxT(t))
	if err == nil || !strings.Contains(err.Error(), "rate limited") || !strings.Contains(err.Error(), "429") ||
		!strings.Contains(err.Error(), "4 attempts") {
		t.Fatalf("list in a 429 storm: %v", err)
	}
	errLine(t, err)
	if n := s.Count("GET /pods"); n != 4 {
		t.Errorf("%d GETs, want 4", n)
	}
	_, err = c.Create(ctxT(t), testSpec(provider.NewRequestID()))
	if err == nil || s.Creates() != 0 {
		t.Fatalf("create in a 429 storm: %v, %d created", err, s.Creates())
	}
	errLine(t, err)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("429 storm took %v: backoff is not bounded", d)
	}
	s.ClearFaults()
	if _, err := c.List(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func Test5xxRetried(t *testing.T) {
	s := newFake(t)
	c := newClient(t, s)
	pod, err := c.Create(ctxT(t), testSpec(provider.NewRequestID()))
	if err != nil {
		t.Fatal(err)
	}
	s.Inject(runpodtest.Fault{Route: "GET /pods/{id}", Kind: runpodtest.ServerError, Status: 502, Times: 2})
	s.Inject(runpodtest.Fault{Route: "GET /pods/{id}", Kind: runpodtest.DropBeforeApply})
	if _, err := c.Get(ctxT(t), pod.ID); err != nil {
		t.Fatal(err)
	}
	if n := s.Count("GET /pods/{id}"); n != 4 {
		t.Errorf("%d GETs, want 4", n)
	}
	s.Inject(runpodtest.Fault{Route: "POST /graphql", Kind: runpodtest.ServerError, Status: 504, Times: 2})
	if _, err := c.GPUTypes(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestBackoff(t *testing.T) {
	c, err := New(Options{APIKey: secret.New(testKey), MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < 12; n++ {
		want := min(100*time.Millisecond<<n, time.Second)
		for i := 0; i < 50; i++ {
			if d := c.backoff(n, nil); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, want/2, want)
			}
		}
	}
	ra := &retryAfterError{apiError: &apiError{Status: 429}, after: time.Hour}
	if d := c.backoff(0, ra); d != time.Second {
		t.Errorf("Retry-After of an hour: waited %v, want the cap", d)
	}
	ra.after = 700 * time.Millisecond
	if d := c.backoff(0, ra); d != 700*time.Millisecond {
		t.Errorf("Retry-After 700ms: waited %v", d)
	}
}

func TestUnauthorized(t *testing.T) {
	s := newFake(t)
	c := newClient(t, s, func(o *Options) { o.APIKey = secret.New(canaryKey) })
	ctx := ctxT(t)
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, provider.ErrUnauthorized) {
			t.Errorf("%s: want ErrUnauthorized, got %v", what, err)
		}
		errLine(t, err)
	}
	_, err := c.List(ctx)
	check("list", err)
	_, err = c.Get(ctx, "abc123")
	check("get", err)
	check("stop", c.Stop(ctx, "abc123"))
	check("start", c.Start(ctx, "abc123"))
	check("terminate", c.Terminate(ctx, "abc123"))
	_, err = c.GPUTypes(ctx)
	check("gpu types", err)
	spec := testSpec(provider.NewRequestID())
	spec.MaxPrice = 5
	_, err = c.Create(ctx, spec)
	check("create", err)
	if s.Creates() != 0 || s.Count("GET /pods") != 2 { // list, and create's search
		t.Errorf("401 must not be retried: %d GET /pods", s.Count("GET /pods"))
	}

	if _, err := New(Options{}); !errors.Is(err, provider.ErrUnauthorized) {
		t.Errorf("no key: %v", err)
	}
}

// A server that echoes the Authorization header, and the create body, in its error
// messages: neither the key nor a secret env value may reach the error.
func TestKeyNeverInErrors(t *testing.T) {
	var body []byte
	gets := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		status := http.StatusBadRequest
		if r.Method == http.MethodGet {
			if gets++; gets > 2 {
				w.Write([]byte("[]"))
				return
			}
			status = http.StatusInternalServerError
		} else {
			body = b
		}
		n := len(b)
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error": "bad request from %s\nwith body %s"}`, r.Header.Get("Authorization"), strings.ReplaceAll(string(b[:n]), `"`, `'`))
	}))
	defer srv.Close()
	c, err := New(Options{APIKey: secret.New(canaryKey), APIURL: srv.URL, GraphQLURL: srv.URL,
		MaxAttempts: 2, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond, SettleWindow: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.List(ctxT(t))
	errLine(t, err)
	if err == nil || !strings.Contains(err.Error(), "Bearer") {
		t.Fatalf("list: %v", err)
	}
	_, err = c.Create(ctxT(t), testSpec(provider.NewRequestID()))
	errLine(t, err)
	if !strings.Contains(string(body), canaryToken) {
		t.Fatalf("the server should have received the secret env value")
	}
	// The scrubbed line still matches nothing it should not, and unwraps to nothing raw.
	for e := errors.Unwrap(err); e != nil; e = errors.Unwrap(e) {
		noLeak(t, "unwrapped error", e.Error())
	}
}

func TestNoCapacity(t *testing.T) {
	s := newFake(t)
	c := newClient(t, s)
	s.SetStock(gpu4090, "SECURE", 0)
	_, err := c.Create(ctxT(t), testSpec(provider.NewRequestID()))
	if !errors.Is(err, provider.ErrNoCapacity) || !strings.Contains(err.Error(), gpu4090) {
		t.Fatalf("want ErrNoCapacity naming %s, got %v", gpu4090, err)
	}
	errLine(t, err)
	if s.Count("POST /pods") != 1 || s.Creates() != 0 {
		t.Errorf("capacity errors must not be retried: %d POSTs", s.Count("POST /pods"))
	}

	// Community cloud has stock.
	spec := testSpec(provider.NewRequestID())
	spec.Cloud = "COMMUNITY"
	pod, err := c.Create(ctxT(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	if pod.CostPerHr != 0.34 {
		t.Errorf("community price %v", pod.CostPerHr)
	}

	// A stopped pod whose host has no GPU left cannot start.
	if err := c.Stop(ctxT(t), pod.ID); err != nil {
		t.Fatal(err)
	}
	s.SetStock(gpu4090, "COMMUNITY", 0)
	err = c.Start(ctxT(t), pod.ID)
	if !errors.Is(err, provider.ErrNoCapacity) || !strings.Contains(err.Error(), gpu4090) {
		t.Fatalf("start without GPUs: %v", err)
	}
	errLine(t, err)
}

func TestPriceTooHigh(t *testing.T) {
	s := newFake(t)
	c := newClient(t, s)
	ctx := ctxT(t)

	spec := testSpec(provider.NewRequestID())
	spec.MaxPrice = 0.5 // a 4090 is 0.69 in secure cloud
	_, err := c.Create(ctx, spec)
	if !errors.Is(err, provider.ErrPriceTooHigh) || !strings.Contains(err.Error(), gpu4090) || !strings.Contains(err.Error(), "0.690") {
		t.Fatalf("want ErrPriceTooHigh, got %v", err)
	}
	errLine(t, err)

	spec.GPUCount, spec.MaxPrice = 2, 1.0 // two cost 1.38
	if _, err = c.Create(ctx, spec); !errors.Is(err, provider.ErrPriceTooHigh) {
		t.Fatalf("two GPUs: %v", err)
	}
	if s.Count("POST /pods") != 0 {
		t.Fatal("a pod above the maximum price was requested")
	}

	spec.GPUCount, spec.MaxPrice = 1, 0.7
	if _, err = c.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}

	// Not offered in that cloud at all.
	spec = testSpec(provider.NewRequestID())
	spec.GPUType, spec.Cloud, spec.MaxPrice = "NVIDIA A40", "COMMUNITY", 5
	if _, err = c.Create(ctx, spec); !errors.Is(err, provider.ErrNoCapacity) {
		t.Fatalf("A40 in community cloud: %v", err)
	}
	spec.GPUType = "NVIDIA NoSuchGPU"
	if _, err = c.Create(ctx, spec); err == nil || !strings.Contains(err.Error(), "unknown GPU type") {
		t.Fatalf("unknown GPU: %v", err)
	}
}

// The machine RunPod picks can cost more than the quoted lowest price: the pod is
// terminated at once and Create reports ErrPriceTooHigh.
func TestPriceDriftTerminates(t *testing.T) {
	s := newFake(t)
	c := newClient(t, s)
	s.SetPriceDrift(gpu4090, 1.5)
	spec := testSpec(provider.NewRequestID())
	spec.MaxPrice = 0.8
	_, err := c.Create(ctxT(t), spec)
	if !errors.Is(err, provider.ErrPriceTooHigh) || !strings.Contains(err.Error(), "terminated") {
		t.Fatalf("want ErrPriceTooHigh after terminating, got %v", err)
	}
	errLine(t, err)
	if s.Creates() != 1 || len(s.Pods()) != 0 {
		t.Errorf("%d created, %d left", s.Creates(), len(s.Pods()))
	}
}

func TestGPUTypes(t *testing.T) {
	s := newFake(t)
	c := newClient(t, s)
	types, err := c.GPUTypes(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]provider.GPUType{}
	for _, g := range types {
		by[g.ID] = g
	}
	if g := by[gpu4090]; g.Name != "RTX 4090" || g.MemoryGB != 24 || g.SecurePrice != 0.69 || g.CommunityPrice != 0.34 || !g.Available {
		t.Errorf("4090: %+v", g)
	}
	if g := by["NVIDIA RTX A6000"]; g.Available || g.SecurePrice != 0.49 { // no stock: list price
		t.Errorf("A6000: %+v", g)
	}
	if g := by["NVIDIA A40"]; !g.Available || g.SecurePrice != 0.40 || g.CommunityPrice != 0.35 {
		t.Errorf("A40: %+v", g)
	}
	if len(types) != 4 {
		t.Errorf("%d types", len(types))
	}
}

func TestCostAsString(t *testing.T) {
	s := newFake(t, func(o *runpodtest.Options) { o.CostAsString = true })
	c := newClient(t, s)
	pod, err := c.Create(ctxT(t), testSpec(provider.NewRequestID()))
	if err != nil || pod.CostPerHr != 0.69 {
		t.Fatalf("%v %+v", err, pod)
	}
}

// A DELETE whose answer was lost was applied: the retry's 404 is success.
func TestTerminateLostAnswer(t *testing.T) {
	s := newFake(t)
	c := newClient(t, s)
	pod, err := c.Create(ctxT(t), testSpec(provider.NewRequestID()))
	if err != nil {
		t.Fatal(err)
	}
	s.Inject(runpodtest.Fault{Route: "DELETE /pods/{id}", Kind: runpodtest.DropAfterApply})
	if err := c.Terminate(ctxT(t), pod.ID); err != nil {
		t.Fatal(err)
	}
	if len(s.Pods()) != 0 || s.Count("DELETE /pods/{id}") != 2 {
		t.Errorf("%d pods, %d DELETEs", len(s.Pods()), s.Count("DELETE /pods/{id}"))
	}
}

func TestBadInput(t *testing.T) {
	s := newFake(t)
	c := newClient(t, s)
	ctx := ctxT(t)
	for _, mod := range []func(*provider.CreateSpec){
		func(sp *provider.CreateSpec) { sp.RequestID = "" },
		func(sp *provider.CreateSpec) { sp.RequestID = "has space" },
		func(sp *provider.CreateSpec) { sp.GPUType = "" },
		func(sp *provider.CreateSpec) { sp.Image = "" },
		func(sp *provider.CreateSpec) { sp.Cloud = "MOON" },
		func(sp *provider.CreateSpec) { sp.Env = map[string]string{"HF_TOKEN": "x"} },
		func(sp *provider.CreateSpec) { sp.Env = map[string]string{provider.EnvRequestID: "x"} },
		func(sp *provider.CreateSpec) { sp.SSHPublicKey = "-----BEGIN OPENSSH PRIVATE KEY-----" },
	} {
		sp := testSpec(provider.NewRequestID())
		mod(&sp)
		if _, err := c.Create(ctx, sp); err == nil {
			t.Errorf("create %+v: no error", sp)
		} else {
			errLine(t, err)
		}
	}
	for _, id := range []string{"", "../pods", "a/b", "a?b"} {
		if _, err := c.Get(ctx, id); err == nil {
			t.Errorf("get %q: no error", id)
		}
	}
	if len(s.Requests()) != 0 {
		t.Errorf("bad input reached the server: %+v", s.Requests())
	}

	// A port RunPod rejects comes back as a one-line error.
	sp := testSpec(provider.NewRequestID())
	sp.Ports = []string{"http:8000"}
	if _, err := c.Create(ctx, sp); err == nil || !strings.Contains(err.Error(), "HTTP 400") {
		t.Errorf("bad port: %v", err)
	} else {
		errLine(t, err)
	}
}

func TestPodName(t *testing.T) {
	id := "sc" + strings.Repeat("a", 16)
	for _, tc := range []struct{ name, want string }{
		{"", "scopectl-" + id},
		{"wan", "wan-" + id},
		{"wan-" + id, "wan-" + id},
		{strings.Repeat("x", 300), strings.Repeat("x", 191-len(id)-1) + "-" + id},
	} {
		if got := podName(tc.name, id); got != tc.want || len(got) > 191 {
			t.Errorf("podName(%q) = %q", tc.name, got)
		}
	}
}

func TestOptions(t *testing.T) {
	env := map[string]string{EnvAPIURL: "https://rest.example.test/v1/", EnvGraphQLURL: "https://gql.example.test/graphql", EnvAPIKey: " " + testKey + "\n"}
	o := OptionsFromEnv(func(k string) string { return env[k] })
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if c.apiURL != "https://rest.example.test/v1" || c.gqlURL != "https://gql.example.test/graphql" || c.key.Reveal() != testKey {
		t.Errorf("%s %s", c.apiURL, c.gqlURL)
	}
	c, err = New(Options{APIKey: secret.New(testKey)})
	if err != nil || c.apiURL != DefaultAPIURL || c.gqlURL != DefaultGraphQLURL || c.Name() != "runpod" {
		t.Errorf("defaults: %v", err)
	}
	for _, u := range []string{"http://rest.example.test/v1", "ftp://x/y", "not a url", "https://user:pw@x/v1"} {
		if _, err := New(Options{APIKey: secret.New(testKey), APIURL: u}); err == nil {
			t.Errorf("%s accepted", u)
		} else if strings.Contains(err.Error(), "pw") {
			t.Errorf("error shows URL credentials: %v", err)
		}
	}
	if _, err := New(Options{APIKey: secret.New(testKey), APIURL: "http://127.0.0.1:1/v1", GraphQLURL: "http://localhost:2/graphql"}); err != nil {
		t.Errorf("loopback http refused: %v", err)
	}
	// The caller's redactor learns the key and secret env values.
	red := &secret.Redactor{}
	s := newFake(t)
	c = newClient(t, s, func(o *Options) { o.Redactor = red })
	if _, err := c.Create(ctxT(t), testSpec(provider.NewRequestID())); err != nil {
		t.Fatal(err)
	}
	if got := red.Redact(testKey + " " + canaryToken); strings.Contains(got, testKey) || strings.Contains(got, canaryToken) {
		t.Errorf("caller's redactor: %s", got)
	}
}

func TestFindByTag(t *testing.T) {
	s := newFake(t)
	c := newClient(t, s)
	a, b := provider.NewRequestID(), provider.NewRequestID()
	pa, err := c.Create(ctxT(t), testSpec(a))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctxT(t), testSpec(b)); err != nil {
		t.Fatal(err)
	}
	found, err := c.FindByTag(ctxT(t), a)
	if err != nil || len(found) != 1 || found[0].ID != pa.ID {
		t.Fatalf("%v %+v", err, found)
	}
	if found, _ := c.FindByTag(ctxT(t), provider.NewRequestID()); len(found) != 0 {
		t.Errorf("found %+v", found)
	}
}

// PodHostID reads the gateway login from GraphQL; an unknown pod is ErrNotFound.
func TestPodHostID(t *testing.T) {
	s := newFake(t)
	c := newClient(t, s)
	ctx := ctxT(t)
	p, err := c.Create(ctx, testSpec(provider.NewRequestID()))
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.PodHostID(ctx, p.ID)
	if err != nil || h != s.PodHostID(p.ID) || !strings.HasPrefix(h, p.ID+"-") {
		t.Fatalf("PodHostID = %q, %v (want %q)", h, err, s.PodHostID(p.ID))
	}
	if _, err := c.PodHostID(ctx, "nosuchpod123"); !errors.Is(err, provider.ErrNotFound) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("unknown pod: %v", err)
	}
	if _, err := c.PodHostID(ctx, "../x"); err == nil {
		t.Fatal("bad id accepted")
	}
}
