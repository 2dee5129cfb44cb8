package httpx

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// closedAddr returns an address on loopback where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestUnreachable(t *testing.T) {
	hc := &http.Client{Timeout: 10 * time.Second}
	refused := closedAddr(t)
	for _, tc := range []struct {
		url, host string
		refused   bool
	}{
		{"http://" + refused + "/x", refused, true},
		{"https://scopectl-test.invalid/x", "scopectl-test.invalid", false}, // RFC 6761: never resolves
	} {
		start := time.Now()
		_, err := hc.Get(tc.url)
		if err == nil {
			t.Fatalf("%s: no error", tc.url)
		}
		u := Unreachable(tc.host, err)
		if u == nil {
			t.Fatalf("%s: %v not classified as unreachable", tc.url, err)
		}
		if u.Refused != tc.refused || !errors.Is(u, ErrUnreachable) || !Permanent(err) {
			t.Errorf("%s: %+v", tc.url, u)
		}
		if msg := u.Error(); !strings.Contains(msg, tc.host+" is unreachable") || strings.Contains(msg, "\n") {
			t.Errorf("%s: message %q", tc.url, msg)
		}
		if Unreachable("", err) == nil || Unreachable("", err).Host == "" {
			t.Errorf("%s: no host from the error itself", tc.url)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: took %s", tc.url, d)
		}
	}
	// a wrapped UnreachableError is found again as itself
	u := &UnreachableError{Host: "h", Refused: true}
	if Unreachable("other", errors.Join(errors.New("x"), u)) != u {
		t.Error("wrapped UnreachableError not returned as is")
	}
}

func TestPermanent(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	_, err := http.Get(srv.URL) // the default client does not trust the test CA
	if err == nil || !Permanent(err) || !TLSError(err) {
		t.Errorf("untrusted certificate: %v permanent=%v", err, Permanent(err))
	}
	plain := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer plain.Close()
	_, err = http.Get(strings.Replace(plain.URL, "http:", "https:", 1))
	if err == nil || !Permanent(err) {
		t.Errorf("plain HTTP answering HTTPS: %v", err)
	}
	for _, err := range []error{
		errors.New("read: connection reset by peer"),
		context.DeadlineExceeded, // one attempt's timeout
		&net.DNSError{Err: "server misbehaving", Name: "x", IsTemporary: true},
		nil,
	} {
		if Permanent(err) {
			t.Errorf("%v is permanent", err)
		}
	}
	if !Permanent(context.Canceled) || !Permanent(&net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}) {
		t.Error("cancelled or not found is not permanent")
	}
}

func TestRetryableStatus(t *testing.T) {
	for code, want := range map[int]bool{200: false, 400: false, 401: false, 403: false, 404: false, 408: true, 409: false,
		429: true, 500: true, 501: false, 502: true, 503: true, 504: true, 505: false} {
		if RetryableStatus(code) != want {
			t.Errorf("%d: %v", code, !want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"3": 3 * time.Second, " 0 ": 0, "Wed, 01 Jan 2025 00:00:10 GMT": 10 * time.Second,
		"Tue, 31 Dec 2024 00:00:00 GMT": 0, // in the past
	} {
		if d, ok := ParseRetryAfter(in, now); !ok || d != want {
			t.Errorf("%q: %s %v", in, d, ok)
		}
	}
	for _, in := range []string{"", "-1", "soon"} {
		if _, ok := ParseRetryAfter(in, now); ok {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	for n, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 30: time.Second} {
		for range 50 {
			if d := b.Delay(n, ""); d < want/2 || d > want {
				t.Fatalf("retry %d: %s not in [%s, %s]", n, d, want/2, want)
			}
		}
	}
	if d := b.Delay(1, "7"); d != time.Second {
		t.Errorf("Retry-After above Max: %s", d)
	}
	if d := b.Delay(5, "0"); d != 0 {
		t.Errorf("Retry-After 0: %s", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep on a cancelled context: %v", err)
	}
}

func TestDo(t *testing.T) {
	ctx := context.Background()
	errBusy, errBad := errors.New("busy"), errors.New("bad request")
	pol := func(retryAfter string) Policy {
		return Policy{Backoff: Backoff{Min: time.Millisecond, Max: 4 * time.Millisecond}, Attempts: 4, Op: "op",
			Retryable:  func(err error) bool { return errors.Is(err, errBusy) },
			RetryAfter: func(error) (time.Duration, bool) { return RetryAfterHeader(retryAfter) }}
	}
	// Fails twice, then succeeds: two retries reported, each before its wait.
	var seen []Retry
	p := pol("")
	p.Notify = func(r Retry) { seen = append(seen, r) }
	v, err := Do(ctx, p, func(n int) (int, error) {
		if n < 3 {
			return 0, errBusy
		}
		return n, nil
	})
	if err != nil || v != 3 || len(seen) != 2 || seen[1].Attempt != 2 || seen[1].Of != 4 || seen[1].Reason != "busy" || seen[1].Wait > 4*time.Millisecond {
		t.Fatalf("Do = %d, %v; retries %+v", v, err, seen)
	}
	// A failure the policy refuses: at once, as is.
	calls := 0
	if _, err := Do(ctx, pol(""), func(int) (int, error) { calls++; return 0, errBad }); err != errBad || calls != 1 {
		t.Fatalf("permanent: %v after %d calls", err, calls)
	}
	// Attempts spent: the last failure, with the count.
	_, err = Do(ctx, pol(""), func(int) (int, error) { return 0, errBusy })
	var g *GaveUpError
	if !errors.As(err, &g) || g.Attempts != 4 || !errors.Is(err, errBusy) || err.Error() != "busy" {
		t.Fatalf("gave up: %v", err)
	}
	// Retry-After replaces the wait, capped at RetryAfterMax.
	p = pol("1")
	p.RetryAfterMax = 30 * time.Millisecond
	p.Notify = func(r Retry) { seen = append(seen, r) }
	seen = nil
	if _, err := Do(ctx, p, func(n int) (int, error) {
		if n < 2 {
			return 0, errBusy
		}
		return 0, nil
	}); err != nil || len(seen) != 1 || seen[0].Wait != 30*time.Millisecond {
		t.Fatalf("Retry-After: %v %+v", err, seen)
	}
	// A context that ends during a wait ends the loop at once with its error.
	p = pol("")
	p.Backoff = Backoff{Min: time.Hour, Max: time.Hour}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Do(cctx, p, func(int) (int, error) { return 0, errBusy }); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
		t.Fatalf("cancelled: %v after %s", err, time.Since(start))
	}
	// Progress starts the count again; MaxTries still bounds the attempts in all.
	p = pol("")
	p.Progressed = func(error) bool { return true }
	p.MaxTries = 7
	calls = 0
	if _, err := Do(ctx, p, func(int) (int, error) { calls++; return 0, errBusy }); !errors.As(err, &g) || calls != 7 {
		t.Fatalf("MaxTries: %v after %d calls", err, calls)
	}
	// MaxElapsed: no wait that would end past it.
	p = pol("")
	p.Attempts, p.MaxElapsed = 0, 20*time.Millisecond
	p.Backoff = Backoff{Min: 50 * time.Millisecond, Max: 50 * time.Millisecond}
	if _, err := Do(ctx, p, func(int) (int, error) { return 0, errBusy }); !errors.As(err, &g) || g.Attempts != 1 {
		t.Fatalf("MaxElapsed: %v", err)
	}
}
