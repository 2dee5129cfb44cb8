// Package civitai is scopectl's CivitAI client: it resolves model, version, page-URL and
// AIR references, reads version metadata, identifies files by hash, searches Wan LoRAs and
// downloads a version's SafeTensor file in parallel ranges, resumably, verified against
// the SHA256 CivitAI publishes, and renamed into place atomically.
//
// Security: the API key only ever travels in an Authorization header to BaseURL's origin;
// redirects to the storage CDN are followed by hand without it. File names from CivitAI
// are sanitized and every write goes through an os.Root on the target directory. Errors
// never contain the key or the query of any URL.
package civitai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/daydreamlive/scopectl/internal/httpx"
	"github.com/daydreamlive/scopectl/internal/progress"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// DefaultBaseURL is CivitAI's site, the default for Client.BaseURL (CIVITAI_API_URL).
const DefaultBaseURL = "https://civitai.com"

// Client talks to CivitAI. The zero value works against https://civitai.com without a key.
type Client struct {
	BaseURL     string        // CIVITAI_API_URL; "" means DefaultBaseURL
	Token       secret.Secret // CIVITAI_API_KEY; sent only as a Bearer header to BaseURL's origin
	HTTP        *http.Client  // nil: a default client; keep its Timeout 0 (stalls are detected per read)
	Connections int           // parallel ranged connections for downloads; 0 means 4
	Progress    progress.Reporter

	// tuning for tests; zero values mean the defaults below
	chunkSize    int64
	stallTimeout time.Duration
	backoffMin   time.Duration
	backoffMax   time.Duration
	maxAttempts  int
	now          func() time.Time
}

const (
	defaultConnections = 4
	maxConnections     = 16
	defaultChunk       = 16 << 20
	defaultStall       = 30 * time.Second
	defaultBackoffMin  = time.Second
	defaultBackoffMax  = 30 * time.Second
	defaultAttempts    = 8
	maxJSONBytes       = 32 << 20
	userAgent          = "scopectl (+https://github.com/daydreamlive/scopectl)"
)

func (c *Client) conns() int {
	switch n := c.Connections; {
	case n <= 0:
		return defaultConnections
	case n > maxConnections:
		return maxConnections
	default:
		return n
	}
}

func (c *Client) chunk() int64 {
	if c.chunkSize > 0 {
		return c.chunkSize
	}
	return defaultChunk
}

func (c *Client) stall() time.Duration {
	if c.stallTimeout > 0 {
		return c.stallTimeout
	}
	return defaultStall
}

func (c *Client) attempts() int {
	if c.maxAttempts > 0 {
		return c.maxAttempts
	}
	return defaultAttempts
}

func (c *Client) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// base returns the parsed BaseURL: http(s), no user info, query or fragment, no trailing slash.
func (c *Client) base() (*url.URL, error) {
	raw := strings.TrimRight(strings.TrimSpace(c.BaseURL), "/")
	if raw == "" {
		raw = DefaultBaseURL
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("civitai: CIVITAI_API_URL must be an http(s) URL without user info or query, like %s: %w", DefaultBaseURL, ErrBadRef)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// sameOrigin reports whether u has the scheme and host (with port) of base.
func sameOrigin(base, u *url.URL) bool {
	return strings.EqualFold(base.Scheme, u.Scheme) && strings.EqualFold(base.Host, u.Host)
}

// httpClient returns a copy of the configured client that never follows redirects
// (scopectl follows them by hand to control which headers go where) and has no cookie jar.
func (c *Client) httpClient() *http.Client {
	var hc http.Client
	if c.HTTP != nil {
		hc = *c.HTTP
	} else {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = maxConnections
		hc.Transport = t
	}
	hc.Jar = nil
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &hc
}

// watchdog cancels a request when no bytes arrive for the stall timeout. kick() after
// every read; stop() when done; stalled() tells whether it fired.
type watchdog struct {
	t      *time.Timer
	d      time.Duration
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func (c *Client) newWatchdog(ctx context.Context) *watchdog {
	rctx, cancel := context.WithCancelCause(ctx)
	w := &watchdog{d: c.stall(), ctx: rctx, cancel: cancel}
	w.t = time.AfterFunc(w.d, func() { cancel(errStalled) })
	return w
}

func (w *watchdog) kick()         { w.t.Reset(w.d) }
func (w *watchdog) stop()         { w.t.Stop(); w.cancel(nil) }
func (w *watchdog) stalled() bool { return errors.Is(context.Cause(w.ctx), errStalled) }

// policy is the client's retry policy: the shared schedule (httpx.Backoff: exponential
// from backoffMin to backoffMax, jittered in [d/2, d]); a Retry-After header replaces a
// wait, capped at twice backoffMax; attempts() attempts; only a *retryErr is retried.
// Each retry is reported through Progress first, so that none passes silently.
func (c *Client) policy() httpx.Policy {
	lo, hi := c.backoffMin, c.backoffMax
	if lo <= 0 {
		lo = defaultBackoffMin
	}
	if hi <= 0 {
		hi = defaultBackoffMax
	}
	return httpx.Policy{
		Backoff:       httpx.Backoff{Min: lo, Max: hi},
		RetryAfterMax: 2 * hi,
		Attempts:      c.attempts(),
		Retryable:     func(err error) bool { return errors.As(err, new(*retryErr)) },
		RetryAfter: func(err error) (time.Duration, bool) {
			var re *retryErr
			errors.As(err, &re)
			return httpx.RetryAfterHeader(re.retryAfter)
		},
		Op: "civitai",
		Notify: func(r httpx.Retry) {
			c.Progress.Retry(r.Op, r.Attempt, r.Of, strings.TrimPrefix(r.Reason, "civitai: "), r.Wait)
		},
	}
}

// retryable reports whether a status code is worth retrying (rate limits, server errors).
func retryable(code int) bool { return httpx.RetryableStatus(code) }

// apiErrorBody is CivitAI's JSON error shape: {"error": "...", "message": "...", "deadline": "..."}.
type apiErrorBody struct {
	Error    any    `json:"error"`
	Message  string `json:"message"`
	Deadline string `json:"deadline"`
}

func (c *Client) readAPIError(resp *http.Response) apiErrorBody {
	var b apiErrorBody
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_ = json.Unmarshal(data, &b)
	return b
}

func (b apiErrorBody) text(c *Client) string {
	var parts []string
	if s, ok := b.Error.(string); ok && s != "" {
		parts = append(parts, s)
	}
	if b.Message != "" {
		parts = append(parts, b.Message)
	}
	return c.scrub(strings.Join(parts, ": "))
}

// what describes the subject of a request in an error message.
type what struct {
	desc string // "model version 123"
	page string // model page, for "unlock it at …"; may be ""
}

// statusError turns a failed CivitAI answer into a one-line error that says what to do.
func (c *Client) statusError(resp *http.Response, w what, sentToken bool) error {
	body := c.readAPIError(resp)
	msg := body.text(c)
	detail := ""
	if msg != "" {
		detail = " (CivitAI says: " + msg + ")"
	}
	keyHint := "create an API key at https://civitai.com/user/account and set CIVITAI_API_KEY"
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		if strings.Contains(strings.ToLower(msg), "disabled downloads") {
			return fmt.Errorf("civitai: %s: the creator has disabled downloads of this file (401)%s: %w", w.desc, detail, ErrForbidden)
		}
		if sentToken {
			return fmt.Errorf("civitai: %s: CivitAI refused the API key (401)%s; it may be invalid or revoked: %s: %w", w.desc, detail, keyHint, ErrAuth)
		}
		return fmt.Errorf("civitai: %s needs a logged-in CivitAI account to download (401)%s: %s: %w", w.desc, detail, keyHint, ErrAuth)
	case http.StatusForbidden:
		if strings.Contains(strings.ToLower(msg), "early access") {
			return c.earlyAccessError(w, body.Deadline, sentToken)
		}
		return fmt.Errorf("civitai: %s: CivitAI refused access (403 Forbidden)%s: %w", w.desc, detail, ErrForbidden)
	case http.StatusNotFound:
		return fmt.Errorf("civitai: %s not found on CivitAI (404; it may be unpublished, private or deleted): check the id or URL: %w", w.desc, ErrNotFound)
	case http.StatusGone:
		return fmt.Errorf("civitai: %s was archived or removed from CivitAI and can no longer be downloaded (410 Gone)%s: %w", w.desc, detail, ErrGone)
	case http.StatusTooManyRequests:
		return fmt.Errorf("civitai: %s: CivitAI is rate limiting this client (429)%s; wait a few minutes and run again: %w", w.desc, detail, ErrRetry)
	case http.StatusBadRequest:
		return fmt.Errorf("civitai: %s: CivitAI rejected the request (400)%s: %w", w.desc, detail, ErrProtocol)
	}
	if resp.StatusCode >= 500 {
		return fmt.Errorf("civitai: %s: CivitAI is failing (%d %s)%s; try again later: %w", w.desc, resp.StatusCode, http.StatusText(resp.StatusCode), detail, ErrRetry)
	}
	return fmt.Errorf("civitai: %s: unexpected answer %d %s%s: %w", w.desc, resp.StatusCode, http.StatusText(resp.StatusCode), detail, ErrProtocol)
}

func (c *Client) earlyAccessError(w what, deadline string, sentToken bool) error {
	until := ""
	if t, err := time.Parse(time.RFC3339, deadline); err == nil {
		until = " until " + t.UTC().Format("2006-01-02 15:04 MST")
	}
	page := w.page
	if page == "" {
		page = "its CivitAI page"
	}
	how := "unlock it at " + page + " with the account of your API key (CIVITAI_API_KEY), or wait until early access ends"
	if !sentToken {
		how = "unlock it at " + page + ", then set CIVITAI_API_KEY to an API key of that account (https://civitai.com/user/account), or wait until early access ends"
	}
	return fmt.Errorf("civitai: %s is in early access%s (403): %s: %w", w.desc, until, how, ErrEarlyAccess)
}

// newRequest builds a GET to CivitAI's own origin, with the key as a Bearer header.
func (c *Client) newRequest(ctx context.Context, u *url.URL) (*http.Request, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, false, fmt.Errorf("civitai: building request for %s: %w", redactURL(u), ErrProtocol)
	}
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("Accept", "application/json")
	// CivitAI's download endpoint answers JSON errors (instead of redirecting to the login
	// or pricing pages) only to requests that look like API calls.
	req.Header.Set("Content-Type", "application/json")
	sent := false
	if tok := c.Token.Reveal(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
		sent = true
	}
	return req, sent, nil
}

// getJSON GETs base+path?query from CivitAI and decodes a 200 answer into out, retrying
// 429/5xx/network errors with bounded backoff.
func (c *Client) getJSON(ctx context.Context, path string, q url.Values, w what, out any) error {
	base, err := c.base()
	if err != nil {
		return err
	}
	u := *base
	u.Path = base.Path + path
	u.RawQuery = q.Encode()
	hc := c.httpClient()
	return c.withRetry(ctx, func() error { return c.getJSONOnce(ctx, hc, &u, w, out) })
}

// withRetry runs fn until it succeeds, fails with an error that is not a *retryErr, or
// has failed attempts() times; between tries it backs off with jitter.
func (c *Client) withRetry(ctx context.Context, fn func() error) error {
	_, err := httpx.Do(ctx, c.policy(), func(int) (struct{}, error) { return struct{}{}, fn() })
	var g *httpx.GaveUpError
	var re *retryErr
	if errors.As(err, &g) && errors.As(g.Err, &re) {
		return fmt.Errorf("%w (gave up after %d attempts)", re.err, g.Attempts)
	}
	return err
}

// retryErr marks a failure worth retrying; retryAfter carries a Retry-After header.
type retryErr struct {
	err        error
	retryAfter string
	cut        bool // a transfer that broke off (a download resumes it)
}

func (e *retryErr) Error() string { return e.err.Error() }
func (e *retryErr) Unwrap() error { return e.err }

func (c *Client) getJSONOnce(ctx context.Context, hc *http.Client, u *url.URL, w what, out any) error {
	wd := c.newWatchdog(ctx)
	defer wd.stop()
	req, sent, err := c.newRequest(wd.ctx, u)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if wd.stalled() {
			return &retryErr{err: fmt.Errorf("civitai: %s: %s did not answer within %s: %w", w.desc, u.Host, c.stall(), ErrRetry)}
		}
		ne, again := netError(u.Host, err)
		if !again {
			return fmt.Errorf("civitai: %s: %w", w.desc, ne)
		}
		return &retryErr{err: fmt.Errorf("civitai: %s: %v: %w", w.desc, ne, ErrRetry)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		serr := c.statusError(resp, w, sent)
		if retryable(resp.StatusCode) {
			return &retryErr{err: serr, retryAfter: resp.Header.Get("Retry-After")}
		}
		return serr
	}
	data, err := io.ReadAll(&kickReader{r: io.LimitReader(resp.Body, maxJSONBytes+1), w: wd})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if wd.stalled() {
			return &retryErr{err: fmt.Errorf("civitai: %s: the answer stalled for %s: %w", w.desc, c.stall(), ErrRetry)}
		}
		ne, _ := netError(u.Host, err)
		return &retryErr{err: fmt.Errorf("civitai: %s: reading the answer: %v: %w", w.desc, ne, ErrRetry)}
	}
	if len(data) > maxJSONBytes {
		return fmt.Errorf("civitai: %s: the answer is larger than %d MiB: %w", w.desc, maxJSONBytes>>20, ErrProtocol)
	}
	if err := json.Unmarshal(data, out); err != nil {
		hint := ""
		if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, "json") {
			hint = " (it sent " + clip(ct) + ", maybe a maintenance or bot-check page; is CIVITAI_API_URL right?)"
		}
		return fmt.Errorf("civitai: %s: the answer is not the expected JSON%s: %w", w.desc, hint, ErrProtocol)
	}
	return nil
}

// kickReader kicks a watchdog on every read that returns data.
type kickReader struct {
	r io.Reader
	w *watchdog
}

func (k *kickReader) Read(p []byte) (int, error) {
	n, err := k.r.Read(p)
	if n > 0 {
		k.w.kick()
	}
	return n, err
}
