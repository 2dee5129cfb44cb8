package httpx

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// This file is the one classification of failed HTTP requests that every retrying client
// in scopectl shares (hf, civitai, runpod, the agent remote, deploy, scope), and the one
// retry loop they run (Do, on cenkalti/backoff). A request that cannot succeed by asking
// again fails at once: a host name that does not resolve, a connection refused, a TLS
// certificate that does not verify, a 4xx other than 408 and 429.

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
// that failed together do not retry together). It is cenkalti/backoff's exponential
// schedule, for a caller that keeps its own count (Do keeps it for a retry loop).
type Backoff struct {
	Min, Max time.Duration
}

// Delay returns the wait before retry n (1-based). A Retry-After value retryAfter (""
// for none) replaces it, capped at Max.
func (b Backoff) Delay(n int, retryAfter string) time.Duration {
	if ra, ok := ParseRetryAfter(retryAfter, time.Now()); ok {
		return max(min(ra, b.limits().Max), 0)
	}
	s := b.schedule()
	var d time.Duration
	for range max(n, 1) {
		d = s.NextBackOff()
	}
	return d
}

// limits are Min and Max with their defaults: 500 ms, and Max no less than Min.
func (b Backoff) limits() Backoff {
	if b.Min <= 0 {
		b.Min = 500 * time.Millisecond
	}
	b.Max = max(b.Max, b.Min)
	return b
}

// schedule is the schedule as a backoff.BackOff. cenkalti/backoff draws from
// [i(1-f), i(1+f)] around an interval i that doubles up to its cap: with i = 3/4·d and
// f = 1/3 that is [d/2, d].
func (b Backoff) schedule() backoff.BackOff {
	b = b.limits()
	return &capped{max: b.Max, b: &backoff.ExponentialBackOff{
		InitialInterval:     b.Min * 3 / 4,
		RandomizationFactor: 1.0 / 3,
		Multiplier:          2,
		MaxInterval:         b.Max * 3 / 4,
	}}
}

// capped keeps a schedule's waits at most max (the library's draw may pass it by 1 ns).
type capped struct {
	max time.Duration
	b   backoff.BackOff
}

func (c *capped) NextBackOff() time.Duration { return min(c.b.NextBackOff(), c.max) }
func (c *capped) Reset()                     { c.b.Reset() }

// Policy is how one client retries: which failures are worth another attempt, how many
// attempts it makes, and the waits between them (Backoff; a server's Retry-After
// replaces a wait, capped at RetryAfterMax).
type Policy struct {
	Backoff
	// RetryAfterMax caps a server's Retry-After (default Max).
	RetryAfterMax time.Duration
	// Attempts is the number of failed attempts in a row it makes, the first included;
	// 0: no limit (the context, or MaxElapsed, ends the loop).
	Attempts int
	// MaxElapsed, when not zero, ends the loop when the next wait would end past it
	// (counted from the first attempt).
	MaxElapsed time.Duration
	// Retryable says whether a failed attempt is worth another (nil: every one is).
	Retryable func(err error) bool
	// RetryAfter, when set, reads the server's Retry-After from a failure worth
	// retrying (ok false: none came).
	RetryAfter func(err error) (d time.Duration, ok bool)
	// Progressed, when set, says whether a failed attempt still moved the work on (a
	// transfer that received bytes before it broke): the count of failures in a row
	// and the waits start again.
	Progressed func(err error) bool
	// MaxTries, when not zero, bounds the attempts in all, progress or not.
	MaxTries int
	// Op and Notify report each retry before its wait (Notify may be nil).
	Op     string
	Notify Notify
}

// retryAfter is the server's Retry-After in err, capped at RetryAfterMax.
func (p Policy) retryAfter(err error) (time.Duration, bool) {
	if p.RetryAfter == nil {
		return 0, false
	}
	ra, ok := p.RetryAfter(err)
	return max(min(ra, cmp.Or(p.RetryAfterMax, p.limits().Max)), 0), ok
}

// Wait is a wait Do may take before retry n (1-based) after the failure err: the
// server's Retry-After, capped, or else the schedule's (Backoff.Delay), for a caller
// that waits by the same rules outside Do.
func (p Policy) Wait(n int, err error) time.Duration {
	if ra, ok := p.retryAfter(err); ok {
		return ra
	}
	return p.Delay(n, "")
}

// RetryAfterHeader reads a Retry-After header value v, for Policy.RetryAfter.
func RetryAfterHeader(v string) (time.Duration, bool) { return ParseRetryAfter(v, time.Now()) }

// GaveUpError is the last failure of an attempt worth retrying, once Policy.Attempts
// failures in a row (or Policy.MaxElapsed) are spent. Its text is the failure's.
type GaveUpError struct {
	Attempts int // failures in a row
	Err      error
}

func (e *GaveUpError) Error() string { return e.Err.Error() }
func (e *GaveUpError) Unwrap() error { return e.Err }

// again is a failure worth another attempt, in the shape backoff.Retry reads (a
// *backoff.RetryAfterError among its causes sets the wait).
type again struct{ errs []error }

func (e *again) Error() string   { return e.errs[0].Error() }
func (e *again) Unwrap() []error { return e.errs }

// Do runs attempt (n counts every attempt from 1) under cenkalti/backoff until it
// succeeds, fails with an error Policy.Retryable refuses (returned as is), or the
// attempts are spent (*GaveUpError). A context that ends stops it at once with the
// context's error, also when an attempt failed because of it.
func Do[T any](ctx context.Context, p Policy, attempt func(n int) (T, error)) (T, error) {
	sched := p.schedule()
	n, fails := 0, 0
	var last error
	op := func() (T, error) {
		n++
		v, err := attempt(n)
		if err == nil {
			return v, nil
		}
		last = err
		if p.Retryable != nil && !p.Retryable(err) {
			return v, backoff.Permanent(err)
		}
		if cerr := ctx.Err(); cerr != nil {
			last = cerr
			return v, backoff.Permanent(cerr)
		}
		if p.Progressed != nil && p.Progressed(err) {
			fails = 0
			sched.Reset()
		}
		if fails++; p.Attempts > 0 && fails >= p.Attempts || p.MaxTries > 0 && n >= p.MaxTries {
			last = &GaveUpError{Attempts: fails, Err: err}
			return v, backoff.Permanent(last)
		}
		e := &again{errs: []error{err}}
		if ra, ok := p.retryAfter(err); ok {
			e.errs = append(e.errs, &backoff.RetryAfterError{Duration: ra})
		}
		return v, e
	}
	v, err := backoff.Retry(ctx, op, backoff.WithBackOff(sched), backoff.WithMaxElapsedTime(p.MaxElapsed),
		backoff.WithNotify(func(_ error, d time.Duration) {
			p.Notify.Note(Retry{Op: p.Op, Attempt: fails, Of: p.Attempts, Reason: last.Error(), Wait: d})
		}))
	var a *again
	switch {
	case err == nil:
		return v, nil
	case errors.As(err, &a): // MaxElapsed
		return v, &GaveUpError{Attempts: fails, Err: last}
	case ctx.Err() != nil && errors.Is(err, context.Cause(ctx)):
		return v, ctx.Err()
	}
	return v, last
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
