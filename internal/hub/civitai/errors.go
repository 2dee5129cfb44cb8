package civitai

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/daydreamlive/scopectl/internal/httpx"
)

// Sentinel errors. Every error the client returns wraps at most one of them, so the CLI
// can map them to exit codes with errors.Is. Messages are one line, say what to do, and
// never hold the API key or the query string of a URL (signed CDN links carry signatures).
var (
	ErrBadRef      = errors.New("not a CivitAI reference")           // ParseRef could not read the input
	ErrNotFound    = errors.New("not found")                         // 404: no such model, version, file or hash
	ErrAuth        = errors.New("authentication required")           // 401, or a redirect to the login page
	ErrEarlyAccess = errors.New("early access")                      // 403 early access: the version must be unlocked first
	ErrForbidden   = errors.New("forbidden")                         // 403 for another reason
	ErrGone        = errors.New("removed")                           // 410: archived or removed
	ErrIntegrity   = errors.New("integrity check failed")            // content does not match the published SHA256
	ErrUnsafe      = errors.New("unsafe answer")                     // a file name, redirect or URL scopectl refuses
	ErrUnsupported = errors.New("unsupported file")                  // pickle formats, non-safetensors files, no model file
	ErrExists      = errors.New("a different file is already there") // the final name holds other content
	ErrBusy        = errors.New("download already in progress")      // another process holds the .incomplete file
	ErrRetry       = errors.New("gave up after retries")             // 429/5xx/network errors/stalls kept coming
	ErrProtocol    = errors.New("unexpected answer from CivitAI")    // malformed JSON, bad Content-Range, …
)

// guardedError hides a message that (against all intent) contains the API key.
type guardedError struct {
	msg      string
	sentinel error
}

func (e *guardedError) Error() string { return e.msg }
func (e *guardedError) Unwrap() error { return e.sentinel }

// guard is the last line of defence at every exported method: if an error's text holds
// the token anywhere, it is replaced by a scrubbed copy that keeps only the sentinel.
func (c *Client) guard(err error) error {
	if err == nil {
		return nil
	}
	tok := c.Token.Reveal()
	if tok == "" || !strings.Contains(err.Error(), tok) {
		return err
	}
	ge := &guardedError{msg: strings.ReplaceAll(err.Error(), tok, "[redacted]")}
	for _, s := range []error{ErrBadRef, ErrNotFound, ErrAuth, ErrEarlyAccess, ErrForbidden, ErrGone, ErrIntegrity,
		ErrUnsafe, ErrUnsupported, ErrExists, ErrBusy, ErrRetry, ErrProtocol, httpx.ErrUnreachable, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, s) {
			ge.sentinel = s
			break
		}
	}
	return ge
}

// scrub turns server-provided text into something safe to print: no token, no control
// characters (terminal escapes), one line, at most 200 characters.
func (c *Client) scrub(s string) string {
	if tok := c.Token.Reveal(); tok != "" {
		s = strings.ReplaceAll(s, tok, "[redacted]")
	}
	return clip(s)
}

// clip makes untrusted text printable on one line and short.
func clip(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "�")
	}
	var b strings.Builder
	n := 0
	space := false
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == '\u2028' || r == '\u2029' {
			r = ' '
		}
		if r == ' ' {
			if space {
				continue
			}
			space = true
		} else {
			space = false
		}
		if n >= 200 {
			b.WriteString("…")
			break
		}
		b.WriteRune(r)
		n++
	}
	return strings.TrimSpace(b.String())
}

// redactURL prints a URL without its query, fragment or user info: a signed CDN link's
// query holds its signature, and a download URL could carry ?token=.
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	v := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	s := v.String()
	if u.RawQuery != "" {
		s += "?…"
	}
	return clip(s)
}

// errStalled is the cause set when the stall watchdog cancels a request.
var errStalled = errors.New("stalled")

// netError describes a transport error without the URL (a CDN URL carries a signature),
// and says whether retrying makes sense.
func netError(host string, err error) (error, bool) {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verr *tls.CertificateVerificationError
	var rec tls.RecordHeaderError
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err, false
	case httpx.Unreachable(host, err) != nil:
		return httpx.Unreachable(host, err), false // DNS not found, connection refused: fail at once
	case errors.As(err, &verr), errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &invalid):
		return fmt.Errorf("the TLS certificate of %s could not be verified (%s); scopectl never skips TLS verification: check the system clock, proxies and CA certificates: %w",
			host, clip(err.Error()), ErrUnsafe), false
	case errors.As(err, &rec) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("%s does not speak TLS (is CIVITAI_API_URL right?): %w", host, ErrProtocol), false
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("%s: timed out", host), true
	}
	return fmt.Errorf("%s: %s", host, clip(err.Error())), true
}
