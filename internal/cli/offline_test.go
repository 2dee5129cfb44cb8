package cli_test

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
)

// TestOfflineFailsAtOnce: a host name that does not resolve and an address where nothing
// listens are not transient; hub search and hub identify fail at once with one line that
// names the host and says it is unreachable (they took 69 s, silently, through 8 retries).
func TestOfflineFailsAtOnce(t *testing.T) {
	e := newEnv(t)
	file := e.lora("a.safetensors", loratest.Spec{Base: lora.BaseT2V1_3B})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := l.Addr().String()
	l.Close()
	for _, tc := range []struct{ url, host, why string }{
		{"https://civitai.invalid", "civitai.invalid", "does not resolve"}, // RFC 6761: never resolves
		{"http://" + refused, refused, "connection refused"},
	} {
		t.Setenv("CIVITAI_API_URL", tc.url)
		for _, args := range [][]string{{"hub", "search", "civitai", "anime"}, {"hub", "identify", file}} {
			start := time.Now()
			out, errs, code := e.run(args...)
			took := time.Since(start)
			if code == 0 || out != "" {
				t.Fatalf("%s %v: exit %d, stdout %q", tc.url, args, code, out)
			}
			if lines := strings.Split(strings.TrimSpace(errs), "\n"); len(lines) != 1 ||
				!strings.Contains(errs, tc.host+" is unreachable") || !strings.Contains(errs, tc.why) || strings.Contains(errs, "attempt") {
				t.Errorf("%s %v: stderr %q", tc.url, args, errs)
			}
			if took > 2*time.Second { // well under one second when not loaded
				t.Errorf("%s %v: took %s", tc.url, args, took)
			}
			// --json: one error object, no retry events
			_, errs, _ = e.run(append(args, "--json")...)
			var obj struct {
				Error string `json:"error"`
			}
			if strings.Count(strings.TrimSpace(errs), "\n") != 0 || json.Unmarshal([]byte(errs), &obj) != nil || !strings.Contains(obj.Error, tc.host+" is unreachable") {
				t.Errorf("%s %v --json: stderr %q", tc.url, args, errs)
			}
		}
	}
}

// TestRetriesAreShown: a retry is one line on stderr with the reason and the wait, an
// NDJSON "retry" event with --json.
func TestRetriesAreShown(t *testing.T) {
	e := newEnv(t)
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 1 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"items":[],"metadata":{}}`))
	}))
	defer srv.Close()
	t.Setenv("CIVITAI_API_URL", srv.URL)
	_, errs, code := e.run("hub", "search", "civitai", "anime")
	if code != 0 || !strings.Contains(errs, "retrying in") || !strings.Contains(errs, "503") || strings.Count(errs, "\n") != 1 {
		t.Errorf("text: exit %d, stderr %q", code, errs)
	}
	_, errs, code = e.run("hub", "search", "civitai", "anime", "--json")
	var ev struct {
		Event   string  `json:"event"`
		Attempt int     `json:"attempt"`
		Reason  string  `json:"reason"`
		WaitS   float64 `json:"wait_s"`
	}
	if code != 0 || json.Unmarshal([]byte(strings.TrimSpace(errs)), &ev) != nil || ev.Event != "retry" || ev.Attempt != 1 || !strings.Contains(ev.Reason, "503") || ev.WaitS <= 0 {
		t.Errorf("json: exit %d, stderr %q", code, errs)
	}
}
