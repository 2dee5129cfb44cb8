package hf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/daydreamlive/scopectl/internal/httpx"
)

// Sentinel errors; every error Pull returns wraps at most one of them, so callers can
// map them to exit codes with errors.Is.
var (
	ErrNotFound  = errors.New("not found")              // repo, revision or path does not exist (or is private)
	ErrAuth      = errors.New("authentication failed")  // 401: token missing, invalid or expired
	ErrGated     = errors.New("gated repo")             // access to a gated repo not granted
	ErrForbidden = errors.New("forbidden")              // 403 for another reason
	ErrGone      = errors.New("removed")                // 410
	ErrIntegrity = errors.New("integrity check failed") // content does not match its sha256/size
	ErrUnsafe    = errors.New("unsafe answer")          // the server sent a path or URL scopectl refuses
	ErrRetry     = errors.New("gave up after retries")  // 429/5xx/network errors kept coming
)

// statusError turns a failed Hub answer into a one-line error that says what to do. It
// never includes the token, the query of a URL, or unsanitised server text.
func (p *pull) statusError(resp *http.Response, what string, sentToken bool) error {
	ref := &p.ref
	if resp.Request != nil && !p.sameOrigin(resp.Request.URL) {
		// the CDN: its URL is signed and short-lived; never print it
		switch resp.StatusCode {
		case http.StatusNotFound, http.StatusGone:
			return tagf(ErrNotFound, "hf: %s: the download server %s has no such object (%d)", what, resp.Request.URL.Host, resp.StatusCode)
		case http.StatusRequestedRangeNotSatisfiable:
			return tagf(ErrIntegrity, "hf: %s: the download server holds fewer bytes than announced (416)", what)
		}
		return fmt.Errorf("hf: %s: the download server %s answered %d %s (its signed link may have expired); run the pull again", what, resp.Request.URL.Host, resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	code := resp.Header.Get("X-Error-Code")
	msg := p.c.scrub(resp.Header.Get("X-Error-Message"))
	repo := ref.Repo
	page := p.base + "/" + urlPrefix(ref.RepoType) + repo
	tokenHint := "set HF_TOKEN (or log in with `hf auth login`) to a token that can read it"
	if sentToken {
		tokenHint = "check that your token's account can read it"
	}
	switch {
	case code == "GatedRepo":
		if resp.StatusCode == http.StatusUnauthorized || !sentToken {
			return tagf(ErrGated, "hf: %s is gated: accept its conditions at %s while logged in, then set HF_TOKEN to a token of that account", repo, page)
		}
		return tagf(ErrGated, "hf: %s is gated and your token's account has not been granted access: accept the conditions at %s (gated repos with manual approval also need the author's approval)", repo, page)
	case code == "RevisionNotFound":
		return tagf(ErrNotFound, "hf: revision %q not found in %s", clip(ref.Revision), repo)
	case code == "EntryNotFound":
		return tagf(ErrNotFound, "hf: %s not found in %s at %s", what, repo, clip(ref.Revision))
	case resp.StatusCode == http.StatusUnauthorized && msg == "Invalid credentials in Authorization header":
		return tagf(ErrAuth, "hf: the Hugging Face token was rejected (401 invalid credentials): HF_TOKEN or $HF_HOME/token holds an invalid or expired token; create a new one at https://huggingface.co/settings/tokens")
	case code == "RepoNotFound" || resp.StatusCode == http.StatusNotFound:
		if ref.RepoType == "model" {
			return tagf(ErrNotFound, "hf: repository %s not found (a private repo looks the same: %s; a dataset needs hf://datasets/…)", repo, tokenHint)
		}
		return tagf(ErrNotFound, "hf: %s repository %s not found (a private repo looks the same: %s)", ref.RepoType, repo, tokenHint)
	case resp.StatusCode == http.StatusUnauthorized:
		if !sentToken {
			return tagf(ErrAuth, "hf: %s needs authentication (401): %s", repo, tokenHint)
		}
		return tagf(ErrAuth, "hf: the Hugging Face token was refused for %s (401): it may be invalid or expired; create a new one at https://huggingface.co/settings/tokens", repo)
	case resp.StatusCode == http.StatusForbidden && msg == "Access to this resource is disabled.":
		return tagf(ErrGone, "hf: access to %s has been disabled by the Hub", repo)
	case resp.StatusCode == http.StatusForbidden:
		return tagf(ErrForbidden, "hf: access to %s forbidden (403): a fine-grained token needs read access to this repo (or to public gated repos); %s", repo, tokenHint)
	case resp.StatusCode == http.StatusGone:
		return tagf(ErrGone, "hf: %s was removed from the Hub (410 Gone)", what)
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return tagf(ErrIntegrity, "hf: %s: the server holds fewer bytes than it announced (416)", what)
	}
	detail := ""
	if msg != "" {
		detail = ": " + msg
	}
	return fmt.Errorf("hf: %s: unexpected answer %d %s%s", what, resp.StatusCode, http.StatusText(resp.StatusCode), detail)
}

// scrub cleans server-provided text for a message: one line, short, no token.
func (c *Client) scrub(s string) string {
	if tok := c.Token.Reveal(); tok != "" {
		s = strings.ReplaceAll(s, tok, "[redacted]")
	}
	return clip(s)
}

// netError describes a transport error without the URL (a CDN URL carries a signature).
func netError(host string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("%s: timed out", host)
	}
	return fmt.Errorf("%s: %s", host, clip(err.Error()))
}

// retryable reports whether a status code is worth retrying (rate limits, server errors).
func retryable(code int) bool { return httpx.RetryableStatus(code) }

// tagged is a message that wraps a sentinel without repeating its text.
type tagged struct {
	msg string
	err error
}

func (t *tagged) Error() string { return t.msg }
func (t *tagged) Unwrap() error { return t.err }

// tagf formats a message that errors.Is matches against sentinel.
func tagf(sentinel error, format string, args ...any) error {
	return &tagged{msg: fmt.Sprintf(format, args...), err: sentinel}
}
