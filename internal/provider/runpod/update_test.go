package runpod

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/runpod/runpodtest"
	"github.com/daydreamlive/scopectl/internal/secret"
)

func TestUpdate(t *testing.T) {
	s := newFake(t)
	c := newClient(t, s)
	pod, err := c.Create(ctxT(t), testSpec("scupdate1"))
	if err != nil {
		t.Fatal(err)
	}
	before := waitRunning(t, c, pod.ID)
	// The pod already has what the spec asks: no request at all.
	same := provider.UpdateSpec{Image: pod.Image, Ports: []string{"8000/http"}, Env: map[string]string{"SCOPE_PORT": "8000"},
		SecretEnv: map[string]secret.Secret{"HF_TOKEN": secret.New(canaryToken)}}
	ch, err := c.Update(ctxT(t), pod.ID, same, false)
	if err != nil || len(ch) != 0 || s.Count("PATCH /pods/{id}") != 0 {
		t.Fatalf("no-op update: %v %v, %d PATCHes", ch, err, s.Count("PATCH /pods/{id}"))
	}
	// A new image, a new variable, a changed secret, one more port.
	newToken := "hf_" + "NEWTOKENNEWTOKENNEWTOKEN12345"
	want := provider.UpdateSpec{Image: "daydreamlive/scope:v2", Ports: []string{"8000/http", "9000/http"},
		Env: map[string]string{"FOO": "bar"}, SecretEnv: map[string]secret.Secret{"HF_TOKEN": secret.New(newToken)}}
	plan, err := c.Update(ctxT(t), pod.ID, want, true)
	if err != nil || len(plan) != 4 || s.Count("PATCH /pods/{id}") != 0 {
		t.Fatalf("dry run: %v %v", plan, err)
	}
	fields := []string{}
	for _, x := range plan {
		fields = append(fields, x.Field)
		noLeak(t, "change", x.String())
		if strings.Contains(x.String(), newToken) {
			t.Fatal("new token in a change")
		}
	}
	if got := strings.Join(fields, ","); got != "image,ports,env FOO,env HF_TOKEN" {
		t.Fatalf("changes %s", got)
	}
	if _, err := c.Update(ctxT(t), pod.ID, want, false); err != nil {
		t.Fatal(err)
	}
	v := onlyPod(t, s)
	if v.Image != "daydreamlive/scope:v2" || v.Env["HF_TOKEN"] != newToken || v.Env["FOO"] != "bar" ||
		v.Env["SCOPE_PORT"] != "8000" || v.Env[provider.EnvRequestID] != "scupdate1" || v.Env["PUBLIC_KEY"] != sshKey ||
		v.Env[provider.EnvSecretNames] != "HF_TOKEN" || strings.Join(v.Ports, ",") != "8000/http,22/tcp,9000/http" {
		t.Fatalf("pod after update: %+v", v)
	}
	// The update reset the running pod: new address.
	after := waitRunning(t, c, pod.ID)
	if before.Ports["22/tcp"] == after.Ports["22/tcp"] {
		t.Fatal("the reset pod kept its public port")
	}
	// Twice: nothing more.
	if ch, err := c.Update(ctxT(t), pod.ID, want, false); err != nil || len(ch) != 0 || s.Updates() != 1 {
		t.Fatalf("second update: %v %v (%d PATCHes)", ch, err, s.Updates())
	}
	// The PATCH body carries only RunPod's update fields (the fake is strict), and
	// the secret list grows with a second secret.
	if _, err := c.Update(ctxT(t), pod.ID, provider.UpdateSpec{SecretEnv: map[string]secret.Secret{"CIVITAI_TOKEN": secret.New("civitai-token-0123456789")}}, false); err != nil {
		t.Fatal(err)
	}
	if got := onlyPod(t, s).Env[provider.EnvSecretNames]; got != "CIVITAI_TOKEN,HF_TOKEN" {
		t.Fatalf("secret names %q", got)
	}
	// Stopped pods are updated without a restart.
	if err := c.Stop(ctxT(t), pod.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Update(ctxT(t), pod.ID, provider.UpdateSpec{Image: "daydreamlive/scope:v3"}, false); err != nil {
		t.Fatal(err)
	}
	if v := onlyPod(t, s); v.Status != provider.StatusExited || v.Image != "daydreamlive/scope:v3" {
		t.Fatalf("stopped pod: %+v", v)
	}
	// Gone: not found, one line.
	c.Terminate(ctxT(t), pod.ID)
	_, err = c.Update(ctxT(t), pod.ID, want, false)
	if !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("update of a terminated pod: %v", err)
	}
	errLine(t, err)
	_, err = c.Update(ctxT(t), pod.ID, provider.UpdateSpec{Env: map[string]string{provider.EnvRequestID: "x"}}, false)
	if err == nil {
		t.Fatal("request id changed by an update")
	}
}

// The pod's own secrets go back in the PATCH (env replaces the whole map) but never
// into a change or an error.
func TestUpdateKeepsForeignSecrets(t *testing.T) {
	const foreign = "sk-" + "FOREIGNSECRETFOREIGNSECRET99"
	var patched map[string]any
	s := newFake(t)
	c := newClient(t, s)
	pod, err := c.Create(ctxT(t), testSpec("scforeign1"))
	if err != nil {
		t.Fatal(err)
	}
	// Give the pod a secret of its own through the API, as a user's template would.
	if _, err := c.Update(ctxT(t), pod.ID, provider.UpdateSpec{Env: map[string]string{"MY_API_KEY": foreign}}, false); err != nil {
		t.Fatal(err)
	}
	ch, err := c.Update(ctxT(t), pod.ID, provider.UpdateSpec{Env: map[string]string{"MY_API_KEY": "other-value-000000000"}}, true)
	if err != nil || len(ch) != 1 || ch[0].From != provider.SecretValue || ch[0].To != provider.SecretValue {
		t.Fatalf("%v %v", ch, err)
	}
	if _, err := c.Update(ctxT(t), pod.ID, provider.UpdateSpec{Image: "img:2"}, false); err != nil {
		t.Fatal(err)
	}
	for _, r := range s.Requests() {
		if r.Route == "PATCH /pods/{id}" {
			patched = nil
			json.Unmarshal([]byte(r.Body), &patched)
		}
	}
	if _, hasEnv := patched["env"]; hasEnv || patched["imageName"] != "img:2" {
		t.Fatalf("image-only update sent %v", patched)
	}
	if v := onlyPod(t, s); v.Env["MY_API_KEY"] != foreign || v.Env["HF_TOKEN"] != canaryToken {
		t.Fatal("an update lost the pod's secrets")
	}
	// An error that echoes the body back shows no secret.
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			fmt.Fprintf(w, `{"id":"p1","desiredStatus":"RUNNING","imageName":"a","env":{"MY_API_KEY":%q}}`, foreign)
			return
		}
		w.WriteHeader(400)
		fmt.Fprintf(w, `{"error":"bad env MY_API_KEY=%s"}`, foreign)
	}))
	defer bad.Close()
	bc := newClient(t, s, func(o *Options) { o.APIURL = bad.URL })
	_, err = bc.Update(ctxT(t), "p1", provider.UpdateSpec{Image: "b"}, false)
	if err == nil || strings.Contains(err.Error(), foreign) {
		t.Fatalf("error leaks: %v", err)
	}
}

func TestProxyURL(t *testing.T) {
	s := newFake(t)
	c := newClient(t, s)
	if got := c.ProxyURL("abc123", 8000); got != "https://abc123-8000.proxy.runpod.net" {
		t.Fatal(got)
	}
	c = newClient(t, s, func(o *Options) { o.ProxyURL = s.ProxyURL() })
	if got := c.ProxyURL("abc123", 8000); got != s.URL+"/proxy/abc123-8000" {
		t.Fatal(got)
	}
	for _, bad := range []string{"http://example.com/{pod}-{port}", "https://{pod}.proxy.runpod.net", "https://u:p@{pod}-{port}.x", "ftp://{pod}-{port}"} {
		if _, err := New(Options{APIKey: secret.New(testKey), ProxyURL: bad}); err == nil {
			t.Errorf("proxy template %q accepted", bad)
		}
	}
	o := OptionsFromEnv(func(k string) string { return map[string]string{EnvProxyURL: " " + s.ProxyURL() + " "}[k] })
	if o.ProxyURL != s.ProxyURL() {
		t.Fatal(o.ProxyURL)
	}
}

// The fake's proxy reaches a pod's container only while the pod runs.
func TestFakeRuntimeAndProxy(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "path=%s", r.URL.Path)
	}))
	defer backend.Close()
	var mu sync.Mutex
	started, stopped := 0, 0
	s := newFake(t, func(o *runpodtest.Options) {
		o.Runtime = func(p runpodtest.PodView) (*runpodtest.Container, error) {
			if strings.HasSuffix(p.Image, ":broken") {
				return nil, errors.New("image pull failed")
			}
			mu.Lock()
			started++
			mu.Unlock()
			return &runpodtest.Container{PublicIP: "127.0.0.1", TCP: map[int]int{22: 2222},
				HTTP: map[int]string{8000: backend.URL}, Stop: func() { mu.Lock(); stopped++; mu.Unlock() }}, nil
		}
	})
	c := newClient(t, s, func(o *Options) { o.ProxyURL = s.ProxyURL() })
	pod, err := c.Create(ctxT(t), testSpec("scruntime1"))
	if err != nil {
		t.Fatal(err)
	}
	p := waitRunning(t, c, pod.ID)
	if host, port, _ := p.SSH(); host != "127.0.0.1" || port != 2222 {
		t.Fatalf("address %s:%d", host, port)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get(c.ProxyURL(pod.ID, 8000) + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/health"); code != 200 || body != "path=/health" {
		t.Fatalf("proxy: %d %q", code, body)
	}
	c.Stop(ctxT(t), pod.ID)
	if code, _ := get("/health"); code != http.StatusBadGateway {
		t.Fatalf("proxy to a stopped pod: %d", code)
	}
	c.Start(ctxT(t), pod.ID)
	waitRunning(t, c, pod.ID)
	c.Update(ctxT(t), pod.ID, provider.UpdateSpec{Image: "x:broken"}, false)
	p, _ = c.Get(ctxT(t), pod.ID)
	if p.Status != provider.StatusCreated {
		t.Fatalf("a pod whose container cannot start: %s", p.Status)
	}
	mu.Lock()
	defer mu.Unlock()
	if started != 2 || stopped != 2 {
		t.Fatalf("started %d, stopped %d", started, stopped)
	}
}
