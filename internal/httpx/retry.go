package httpx

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// This file is the one classification of failed HTTP requests that every retrying client
// in scopectl shares (hf, civitai, runpod, the agent remote, deploy), and the one backoff
// schedule they wait by. A request that cannot succeed by asking again fails at once:
// a host name that does not resolve, a connection refused, a TLS certificate that does
// not verify, a 4xx other than 408 and 429.

// ErrUnreachable matches every *UnreachableError with errors.Is.
var ErrUnreachable = errors.New("host unreachable")

// UnreachableError says a host could not be reached at all: its name does not resolve
// (offline, or a wrong name) or nothing listens at its address. Asking again will not
// help, so clients fail at once with it.
type UnreachableError struct {
	Host    string // host[:port] as asked
	Refused bool   // connection refused; false: the name does not resolve
	Err     error  // the underlying *net.DNSError or syscall error
}

func (e *UnreachableError) Error() string {
	if e.Refused {
		return fmt.Sprintf("%s is unreachable: connection refused (nothing listens there; is the address right and the service up?)", e.Host)
	}
	return fmt.Sprintf("%s is unreachable: the name does not resolve (offline, or a wrong host name?)", e.Host)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrUnreachable) true.
func (e *UnreachableError) Is(target error) bool { return target == ErrUnreachable }

// Unreachable returns an *UnreachableError when err (from http.Client.Do or a dial) is a
// DNS "no such host" or a refused connection, naming host (or the address from the error
// when host is ""); nil otherwise. A temporary DNS failure (a timeout, SERVFAIL) is not
// reported: it may pass.
func Unreachable(host string, err error) *UnreachableError {
	if err == nil {
		return nil
	}
	var ue *UnreachableError
	if errors.As(err, &ue) {
		return ue
	}
	var dns *net.DNSError
	if errors.As(err, &dns) && (dns.IsNotFound || strings.Contains(dns.Err, "no such host")) {
		if host == "" {
			host = dns.Name
		}
		return &UnreachableError{Host: host, Err: dns}
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		if host == "" {
			var op *net.OpError
			if errors.As(err, &op) && op.Addr != nil {
				host = op.Addr.String()
			}
		}
		return &UnreachableError{Host: host, Refused: true, Err: syscall.ECONNREFUSED}
	}
	return nil
}

// TLSError reports whether err is a TLS failure that retrying cannot cure: a certificate
// that does not verify, or a server that does not speak TLS.
func TLSError(err error) bool {
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verr *tls.CertificateVerificationError
	var rec tls.RecordHeaderError
	return errors.As(err, &verr) || errors.As(err, &unknownCA) || errors.As(err, &hostErr) ||
		errors.As(err, &invalid) || errors.As(err, &rec) ||
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}

// Permanent reports whether a request that failed with err (no answer came back) will
// fail the same way if sent again: the caller's context ended, the host is unreachable
// (DNS not found, connection refused), TLS does not verify. Resets, timeouts, cut
// connections and temporary DNS failures are not permanent.
func Permanent(err error) bool {
	if err == nil {
		return false
	}
	var ue *url.Error
	if errors.As(err, &ue) && strings.Contains(ue.Err.Error(), "stopped after") { // too many redirects
		return true
	}
	return errors.Is(err, context.Canceled) || Unreachable("", err) != nil || TLSError(err)
}

// RetryableStatus reports whether an HTTP status is worth asking again: 408, 429 and the
// 5xx answers other than 501 and 505. Every other 4xx is final.
func RetryableStatus(code int) bool {
	return code == http.StatusTooManyRequests || code == http.StatusRequestTimeout ||
		code >= 500 && code != http.StatusNotImplemented && code != http.StatusHTTPVersionNotSupported
}

// ParseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date (RFC 9110
// §10.2.3). ok is false when v is empty or malformed.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// Backoff is an exponential schedule with jitter: the delay before retry n (1-based) is
// drawn from [d/2, d], d = Min·2^(n-1) capped at Max ("equal jitter", so that clients
// that failed together do not retry together).
type Backoff struct {
	Min, Max time.Duration
}

// Delay returns the wait before retry n (1-based). A Retry-After value retryAfter (""
// for none) replaces it, capped at RetryAfterCap (Max when zero).
func (b Backoff) Delay(n int, retryAfter string) time.Duration {
	d := b.base(n)
	d = d/2 + rand.N(d/2+1)
	if ra, ok := ParseRetryAfter(retryAfter, time.Now()); ok {
		d = min(ra, b.Max)
	}
	return max(d, 0)
}

func (b Backoff) base(n int) time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 500 * time.Millisecond
	}
	if hi < lo {
		hi = lo
	}
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// Sleep waits d or until ctx ends (returning its error).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Retry is one retry about to happen, for progress reporting.
type Retry struct {
	Op      string        // what is being done ("search CivitAI", "GET /api/models/…")
	Attempt int           // the attempt that failed (1-based)
	Of      int           // attempts allowed in all (0: unknown)
	Reason  string        // why it failed
	Wait    time.Duration // the wait before the next attempt
}

// Notify receives retries as they happen; nil ignores them.
type Notify func(Retry)

// Note calls n with r when n is not nil.
func (n Notify) Note(r Retry) {
	if n != nil {
		n(r)
	}
}
