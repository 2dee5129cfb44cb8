// Package runpod is the RunPod provider: pods through RunPod's REST API
// (https://rest.runpod.io/v1: GET/POST /pods, GET/DELETE /pods/{id}, POST
// /pods/{id}/start|stop) and, for what REST lacks — GPU types with prices and
// stock — one GraphQL query (https://api.runpod.io/graphql, gpuTypes).
//
// The API key travels only in the Authorization header (never in a URL, where it
// would end up in error messages) and every error is one line that never contains
// it: messages from the API and from the network pass through a secret.Redactor
// that knows the key and every secret environment value this client sent.
//
// Requests that fail with 429 or 5xx, or that never got an answer, are retried with
// exponential backoff and jitter, a bounded number of times. Creating a pod is the
// exception, since RunPod has no idempotency key: see Client.Create.
package runpod

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/daydreamlive/scopectl/internal/httpx"
	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/secret"
)

// Name is the provider's name in the store.
const Name = "runpod"

// Defaults and the environment variables that override the endpoints (the same
// names runpodctl reads).
const (
	DefaultAPIURL     = "https://rest.runpod.io/v1"
	DefaultGraphQLURL = "https://api.runpod.io/graphql"
	EnvAPIURL         = "RUNPOD_API_URL"
	EnvGraphQLURL     = "RUNPOD_GRAPHQL_URL"
	EnvAPIKey         = "RUNPOD_API_KEY"
)

// Options configure a Client. Zero values take the defaults.
type Options struct {
	APIKey     secret.Secret
	APIURL     string // REST base; default DefaultAPIURL
	GraphQLURL string // default DefaultGraphQLURL
	// ProxyURL is the template of pods' HTTP URLs, with {pod} and {port}; default
	// DefaultProxyURL.
	ProxyURL string

	HTTPClient     *http.Client  // default: a client with no overall timeout (RequestTimeout applies)
	RequestTimeout time.Duration // one attempt of a request (default 30s)
	CreateTimeout  time.Duration // one attempt of POST /pods, which finds a machine (default 90s)
	MaxAttempts    int           // attempts per request, and POSTs per Create (default 6)
	MinBackoff     time.Duration // first retry delay (default 500ms)
	MaxBackoff     time.Duration // cap on any one delay, Retry-After included (default 15s)
	// SettleWindow: after a create that may have been applied (no answer, 5xx), how
	// long to keep listing pods for the request's tag before creating again (default
	// 30s). It must outlast RunPod's slowest create, or a slow create can end up as two pods.
	SettleWindow time.Duration
	UserAgent    string
	// Redactor, if set, also receives every secret this client learns (the key and
	// secret env values), so that the caller's logs are scrubbed of them too.
	Redactor *secret.Redactor
}

// OptionsFromEnv reads RUNPOD_API_URL, RUNPOD_GRAPHQL_URL, SCOPECTL_RUNPOD_PROXY_URL and RUNPOD_API_KEY with
// getenv (os.Getenv, or a test's map). The key is usually set from scopectl's config
// instead (config.Config.RunPodKey), which already reads RUNPOD_API_KEY.
func OptionsFromEnv(getenv func(string) string) Options {
	return Options{
		APIKey:     secret.New(strings.TrimSpace(getenv(EnvAPIKey))),
		APIURL:     strings.TrimSpace(getenv(EnvAPIURL)),
		GraphQLURL: strings.TrimSpace(getenv(EnvGraphQLURL)),
		ProxyURL:   strings.TrimSpace(getenv(EnvProxyURL)),
	}
}

// Client is the RunPod provider. It is safe for concurrent use.
type Client struct {
	key        secret.Secret
	apiURL     string
	gqlURL     string
	proxyURL   string
	hc         *http.Client
	reqTimeout time.Duration
	crTimeout  time.Duration
	attempts   int
	minBackoff time.Duration
	maxBackoff time.Duration
	settle     time.Duration
	userAgent  string
	red        *secret.Redactor // this client's: key + secret env values
	callerRed  *secret.Redactor

	creating sync.Map // request id → *sync.Mutex: one Create per id at a time
}

var _ provider.Provider = (*Client)(nil)

// New returns a Client. It fails without an API key, or for an endpoint that is
// not https (plain http only to a loopback address, for tests).
func New(opts Options) (*Client, error) {
	if !opts.APIKey.IsSet() {
		return nil, fmt.Errorf("runpod: no API key: set %s (or runpod_api_key in scopectl's config): %w", EnvAPIKey, provider.ErrUnauthorized)
	}
	c := &Client{
		key: opts.APIKey, apiURL: opts.APIURL, gqlURL: opts.GraphQLURL, proxyURL: opts.ProxyURL, hc: opts.HTTPClient,
		reqTimeout: opts.RequestTimeout, crTimeout: opts.CreateTimeout, attempts: opts.MaxAttempts,
		minBackoff: opts.MinBackoff, maxBackoff: opts.MaxBackoff, settle: opts.SettleWindow,
		userAgent: opts.UserAgent, red: &secret.Redactor{}, callerRed: opts.Redactor,
	}
	if c.apiURL == "" {
		c.apiURL = DefaultAPIURL
	}
	if c.gqlURL == "" {
		c.gqlURL = DefaultGraphQLURL
	}
	if c.proxyURL == "" {
		c.proxyURL = DefaultProxyURL
	}
	if err := checkProxyTemplate(c.proxyURL); err != nil {
		return nil, err
	}
	c.apiURL = strings.TrimRight(c.apiURL, "/")
	for _, u := range []string{c.apiURL, c.gqlURL} {
		if err := checkURL(u); err != nil {
			return nil, err
		}
	}
	if c.hc == nil {
		c.hc = &http.Client{}
	}
	if c.reqTimeout <= 0 {
		c.reqTimeout = 30 * time.Second
	}
	if c.crTimeout <= 0 {
		c.crTimeout = 90 * time.Second
	}
	if c.attempts <= 0 {
		c.attempts = 6
	}
	if c.minBackoff <= 0 {
		c.minBackoff = 500 * time.Millisecond
	}
	if c.maxBackoff <= 0 {
		c.maxBackoff = 15 * time.Second
	}
	if c.maxBackoff < c.minBackoff {
		c.maxBackoff = c.minBackoff
	}
	if c.settle <= 0 {
		c.settle = 30 * time.Second
	}
	if c.userAgent == "" {
		c.userAgent = "scopectl"
	}
	c.addSecret(c.key)
	return c, nil
}

// checkURL refuses endpoints that would send the key in clear text.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("runpod: endpoint %q is not a URL", raw)
	}
	if u.User != nil {
		return fmt.Errorf("runpod: endpoint %s must not carry credentials", u.Redacted())
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if ip := net.ParseIP(u.Hostname()); (ip != nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
			return nil
		}
	}
	return fmt.Errorf("runpod: endpoint %s: only https (plain http only to a loopback address) may carry the API key", u.Redacted())
}

// Name returns "runpod".
func (c *Client) Name() string { return Name }

func (c *Client) addSecretString(v string) {
	if v != "" {
		c.addSecret(secret.New(v))
	}
}

func (c *Client) addSecret(s secret.Secret) {
	c.red.Add(s)
	if c.callerRed != nil {
		c.callerRed.Add(s)
	}
}

// errorf builds one error line: "runpod: …", scrubbed of every known secret, still
// matching the sentinels it wraps.
func (c *Client) errorf(format string, args ...any) error {
	err := fmt.Errorf("runpod: "+format, args...)
	// An error of this client nested in another says "runpod: " once.
	msg := strings.ReplaceAll(oneLine(c.red.Redact(err.Error())), ": runpod: ", ": ")
	return &lineError{msg: msg, err: err}
}

// lineError shows only the scrubbed line. It matches what the original error
// matches (errors.Is: provider.ErrNotFound, context.Canceled, …) but has no Unwrap:
// nothing can reach the unscrubbed text through it.
type lineError struct {
	msg string
	err error
}

func (e *lineError) Error() string        { return e.msg }
func (e *lineError) Is(target error) bool { return errors.Is(e.err, target) }

func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	return strings.Join(strings.Fields(s), " ")
}

// apiError is a non-2xx answer.
type apiError struct {
	Status int
	Msg    string // the API's message, one line, truncated
}

func (e *apiError) Error() string {
	if e.Msg == "" {
		return fmt.Sprintf("HTTP %d", e.Status)
	}
	return fmt.Sprintf("HTTP %d: %s", e.Status, e.Msg)
}

// transportError: no answer (connection refused, reset, timeout). Sent says whether
// the request may have reached the server.
type transportError struct {
	Err  error
	Sent bool
}

// No Unwrap: an attempt's own timeout must not read as the caller's context ending.
func (e *transportError) Error() string { return "no answer: " + e.Err.Error() }

// apiMessage extracts a message from an error body: {"error": …} (REST v1),
// {"detail": …, "errors": [...]} (v2 problem bodies), {"message": …}, GraphQL
// {"errors": [{"message": …}]}, or the text itself.
// Known secrets are scrubbed before the message is cut short, so that no fragment of
// one survives at the cut.
func apiMessage(body []byte, red *secret.Redactor) string {
	var m struct {
		Error   json.RawMessage `json:"error"`
		Detail  string          `json:"detail"`
		Message string          `json:"message"`
		Errors  json.RawMessage `json:"errors"`
	}
	msg := ""
	if json.Unmarshal(body, &m) == nil {
		var s string
		switch {
		case json.Unmarshal(m.Error, &s) == nil && s != "":
			msg = s
		case m.Detail != "":
			msg = m.Detail
		case m.Message != "":
			msg = m.Message
		}
		var gql []struct {
			Message string `json:"message"`
		}
		var strs []string
		if json.Unmarshal(m.Errors, &gql) == nil {
			for _, e := range gql {
				if e.Message != "" {
					strs = append(strs, e.Message)
				}
			}
		} else if json.Unmarshal(m.Errors, &strs) != nil {
			strs = nil
		}
		if len(strs) > 0 {
			if msg != "" {
				msg += ": "
			}
			msg += strings.Join(strs, "; ")
		}
	}
	if msg == "" {
		msg = string(body)
	}
	return truncate(oneLine(red.Redact(msg)))
}

// truncate keeps API messages short, cutting on a rune boundary.
func truncate(msg string) string {
	const limit = 300
	if len(msg) <= limit {
		return msg
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + "…"
}

// capacityMessage recognises RunPod's "no machine for that" messages.
func capacityMessage(msg string) bool {
	m := strings.ToLower(msg)
	for _, s := range []string{"no longer any instances available", "not enough free gpus",
		"no instances available", "no gpus available", "insufficient capacity", "out of capacity"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// retryable: 429, 5xx and no-answer failures are worth another attempt, except those
// the shared rules (httpx.Permanent) call final: DNS not found, connection refused, TLS.
func retryable(err error) bool {
	var ae *apiError
	if errors.As(err, &ae) {
		return (ae.Status == http.StatusTooManyRequests || ae.Status >= 500) && !capacityMessage(ae.Msg)
	}
	var te *transportError
	return errors.As(err, &te) && !httpx.Permanent(te.Err)
}

// ambiguous: the request may have been applied although no success came back.
func ambiguous(err error) bool {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Status >= 500 && !capacityMessage(ae.Msg)
	}
	var te *transportError
	return errors.As(err, &te) && te.Sent
}

// response is a 2xx answer.
type response struct {
	Status int
	Body   []byte
	Date   time.Time // the server's Date header; zero when absent
}

// once sends one request and reads the answer, within timeout.
func (c *Client) once(ctx context.Context, method, u string, body []byte, timeout time.Duration) (*response, error) {
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(actx, method, u, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key.Reveal())
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if u := httpx.Unreachable(req.URL.Host, err); u != nil {
			return nil, &transportError{Err: u} // offline or nothing listening: never sent, not retried
		}
		return nil, &transportError{Err: stripURL(err), Sent: maybeSent(err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &transportError{Err: stripURL(err), Sent: true}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ae := &apiError{Status: resp.StatusCode, Msg: apiMessage(data, c.red)}
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			if d, ok := parseRetryAfter(resp.Header.Get("Retry-After")); ok {
				return nil, &retryAfterError{apiError: ae, after: d}
			}
		}
		return nil, ae
	}
	r := &response{Status: resp.StatusCode, Body: data}
	if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		r.Date = d
	}
	return r, nil
}

type retryAfterError struct {
	*apiError
	after time.Duration
}

func (e *retryAfterError) Unwrap() error { return e.apiError }

func parseRetryAfter(v string) (time.Duration, bool) { return httpx.ParseRetryAfter(v, time.Now()) }

// stripURL drops the *url.Error wrapper (method and URL) from a transport error:
// the operation is named by the caller, and a URL might carry something private.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// maybeSent reports whether a failed request may have reached the server: only a
// failure to connect (dial, DNS) proves it did not.
func maybeSent(err error) bool {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return false
	}
	return true
}

// policy is the retry policy of op: exponential from MinBackoff, capped at MaxBackoff,
// with "equal jitter" (half fixed, half random) so that clients that failed together
// do not retry together; a Retry-After from the server replaces a wait, still capped;
// MaxAttempts attempts of a request that failed with a retryable error. Each retry is
// logged first, so that none passes silently.
func (c *Client) policy(op string) httpx.Policy {
	return httpx.Policy{
		Backoff:   httpx.Backoff{Min: c.minBackoff, Max: c.maxBackoff},
		Attempts:  c.attempts,
		Retryable: retryable,
		RetryAfter: func(err error) (time.Duration, bool) {
			var ra *retryAfterError
			if errors.As(err, &ra) {
				return ra.after, true
			}
			return 0, false
		},
		Op:     op,
		Notify: c.noteRetry,
	}
}

// backoff returns the delay before retry n (0-based) by the same rules, for the polls
// that wait outside a retry loop.
func (c *Client) backoff(n int, err error) time.Duration {
	return c.policy("").Wait(n+1, err)
}

func sleep(ctx context.Context, d time.Duration) error { return httpx.Sleep(ctx, d) }

// urlPath is u without its query (which could carry something private), for messages.
func urlPath(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Path
	}
	return ""
}

// noteRetry logs one line for a retry about to happen, so that none passes silently.
func (c *Client) noteRetry(r httpx.Retry) {
	slog.Warn("retrying", "op", r.Op, "attempt", fmt.Sprintf("%d/%d", r.Attempt, c.attempts), "reason", c.red.Redact(r.Reason), "wait", r.Wait.Round(time.Millisecond))
}

// do sends a request that may be repeated safely (reads, start, stop, delete,
// GraphQL queries), retrying 429, 5xx and lost answers. wasAmbiguous reports
// whether an earlier attempt may have been applied (so that, say, a 404 on a
// repeated DELETE means success).
func (c *Client) do(ctx context.Context, method, u string, body []byte) (resp *response, wasAmbiguous bool, err error) {
	resp, err = httpx.Do(ctx, c.policy(method+" "+urlPath(u)), func(int) (*response, error) {
		resp, err := c.once(ctx, method, u, body, c.reqTimeout)
		if err != nil && retryable(err) {
			wasAmbiguous = wasAmbiguous || ambiguous(err)
		}
		return resp, err
	})
	var g *httpx.GaveUpError
	if errors.As(err, &g) {
		return nil, wasAmbiguous, &exhaustedError{attempts: g.Attempts, last: g.Err}
	}
	return resp, wasAmbiguous, err
}

type exhaustedError struct {
	attempts int
	last     error
}

func (e *exhaustedError) Error() string {
	return fmt.Sprintf("%v (gave up after %d attempts)", e.last, e.attempts)
}
func (e *exhaustedError) Unwrap() error { return e.last }

// classify turns a request error into the provider error for op, naming gpu for
// capacity errors.
func (c *Client) classify(op string, err error, gpu string) error {
	var ae *apiError
	if errors.As(err, &ae) {
		switch {
		case capacityMessage(ae.Msg):
			if gpu == "" {
				gpu = "the requested GPU type"
			}
			return c.errorf("%s: %w for %s: %v", op, provider.ErrNoCapacity, gpu, err)
		case ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden:
			return c.errorf("%s: %w: RunPod refused the API key (HTTP %d); check %s and its permissions", op, provider.ErrUnauthorized, ae.Status, EnvAPIKey)
		case ae.Status == http.StatusNotFound:
			return c.errorf("%s: %w (%v)", op, provider.ErrNotFound, err)
		case ae.Status == http.StatusGone:
			return c.errorf("%s: RunPod has retired this API (HTTP 410 Gone); update scopectl", op)
		case ae.Status == http.StatusTooManyRequests:
			return c.errorf("%s: rate limited by RunPod: %v", op, err)
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return c.errorf("%s: %w", op, err)
	}
	return c.errorf("%s: %v", op, err)
}
