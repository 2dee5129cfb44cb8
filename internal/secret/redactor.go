package secret

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// MinRedactLen is the shortest value a Redactor will scrub. Shorter values
// (which are not meaningful credentials) would otherwise mangle unrelated
// text; Add ignores them.
const MinRedactLen = 4

// Redactor scrubs known secret values out of arbitrary text: error messages
// from libraries, subprocess output, log records. The zero value is ready to
// use and it is safe for concurrent use.
type Redactor struct {
	mu  sync.Mutex              // serialises Add
	set map[string]string       // raw -> replacement; guarded by mu
	m   atomic.Pointer[matcher] // immutable snapshot read lock-free
}

// Default is the process-wide registry the CLI fills from config (see
// config.Config.Secrets) before doing anything that may print.
var Default = &Redactor{}

type entry struct{ raw, repl string }

// matcher is an immutable snapshot of the registered secrets.
type matcher struct {
	byFirst  [256][]entry // by first byte, longest first
	inSecret [256]bool    // bytes that occur in at least one secret
	maxLen   int
}

// Add registers s. Unset secrets and values shorter than MinRedactLen are
// ignored. Adding the same value twice is harmless.
func (r *Redactor) Add(s Secret) {
	v := s.Reveal()
	if len(v) < MinRedactLen {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.set[v]; ok {
		return
	}
	if r.set == nil {
		r.set = make(map[string]string)
	}
	repl := redact(v)
	r.set[v] = repl

	m := &matcher{}
	for raw, repl := range r.set {
		c := raw[0]
		m.byFirst[c] = append(m.byFirst[c], entry{raw, repl})
		for i := 0; i < len(raw); i++ {
			m.inSecret[raw[i]] = true
		}
		m.maxLen = max(m.maxLen, len(raw))
	}
	for i := range m.byFirst {
		slices.SortFunc(m.byFirst[i], func(a, b entry) int {
			if d := len(b.raw) - len(a.raw); d != 0 {
				return d // longest first
			}
			return strings.Compare(a.raw, b.raw)
		})
	}
	r.m.Store(m)
}

// scan replaces secrets in s, examining match starts at positions < limit
// (a match starting before limit may extend past it). It returns the
// redacted text and how many bytes of s were consumed.
func (m *matcher) scan(s string, limit int) (string, int) {
	var out strings.Builder
	i, last := 0, 0
	for i < limit {
		if list := m.byFirst[s[i]]; list != nil {
			matched := false
			for _, e := range list {
				if strings.HasPrefix(s[i:], e.raw) {
					out.WriteString(s[last:i])
					out.WriteString(e.repl)
					i += len(e.raw)
					last = i
					matched = true
					break
				}
			}
			if matched {
				continue
			}
		}
		i++
	}
	if last == 0 {
		return s[:i], i
	}
	out.WriteString(s[last:i])
	return out.String(), i
}

// Redact replaces every occurrence of each registered secret in text with
// its Redacted() form. At each position the longest registered secret wins.
func (r *Redactor) Redact(text string) string {
	m := r.m.Load()
	if m == nil || text == "" {
		return text
	}
	out, _ := m.scan(text, len(text))
	return out
}

// Error wraps err so that its Error() is redacted. errors.Is and errors.As
// still work through Unwrap. Error(nil) returns nil.
//
// Note that errors.Unwrap (or errors.As) hands back the original error,
// whose own Error() is not redacted: print the wrapper, not what you unwrap.
func (r *Redactor) Error(err error) error {
	if err == nil {
		return nil
	}
	if re, ok := err.(*redactedError); ok && re.r == r {
		return err
	}
	return &redactedError{err: err, r: r}
}

type redactedError struct {
	err error
	r   *Redactor
}

func (e *redactedError) Error() string { return e.r.Redact(e.err.Error()) }
func (e *redactedError) Unwrap() error { return e.err }

// Writer wraps w so that registered secrets are scrubbed from everything
// written through it. Because a secret may be split across Write calls, the
// writer holds back up to len(longest secret)-1 bytes (less when the tail
// contains a byte that occurs in no secret, e.g. a newline, so line-oriented
// output is passed through promptly).
//
// Callers MUST call Flush (or Close) when done, e.g. after exec.Cmd.Wait,
// or the held-back tail is lost. Close does not close w.
func (r *Redactor) Writer(w io.Writer) *RedactingWriter {
	return &RedactingWriter{r: r, w: w}
}

// RedactingWriter is returned by Redactor.Writer. It is safe for concurrent
// use (exec.Cmd may write stdout and stderr to the same writer).
type RedactingWriter struct {
	mu  sync.Mutex
	r   *Redactor
	w   io.Writer
	buf []byte
	err error
}

// Write redacts and forwards p, holding back a possibly incomplete secret
// at the end. It reports len(p) on success even if some bytes are held.
func (rw *RedactingWriter) Write(p []byte) (int, error) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.err != nil {
		return 0, rw.err
	}
	m := rw.r.m.Load()
	if m == nil && len(rw.buf) == 0 {
		if _, err := rw.w.Write(p); err != nil {
			rw.err = err
			return 0, err
		}
		return len(p), nil
	}
	rw.buf = append(rw.buf, p...)
	limit := len(rw.buf)
	if m != nil {
		limit = len(rw.buf) - (m.maxLen - 1)
		if limit < 0 {
			limit = 0
		}
		// No secret can span a byte that occurs in no secret.
		for j := len(rw.buf) - 1; j >= limit; j-- {
			if !m.inSecret[rw.buf[j]] {
				limit = j + 1
				break
			}
		}
	}
	if err := rw.emit(m, limit); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (rw *RedactingWriter) emit(m *matcher, limit int) error {
	if limit <= 0 {
		return nil
	}
	var out string
	consumed := limit
	if m != nil {
		out, consumed = m.scan(string(rw.buf), limit)
	} else {
		out = string(rw.buf[:limit])
	}
	n := copy(rw.buf, rw.buf[consumed:])
	rw.buf = rw.buf[:n]
	if _, err := io.WriteString(rw.w, out); err != nil {
		rw.err = err
		return err
	}
	return nil
}

// Flush redacts and writes any held-back bytes.
func (rw *RedactingWriter) Flush() error {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.err != nil {
		return rw.err
	}
	return rw.emit(rw.r.m.Load(), len(rw.buf))
}

// Close flushes. It does not close the underlying writer.
func (rw *RedactingWriter) Close() error { return rw.Flush() }

var _ io.WriteCloser = (*RedactingWriter)(nil)

// NewSlogHandler wraps h so that the message, attribute keys, string
// values, errors and any other value whose printed form contains a
// registered secret are redacted with r before reaching h.
func NewSlogHandler(h slog.Handler, r *Redactor) slog.Handler {
	return &slogHandler{h: h, r: r}
}

type slogHandler struct {
	h slog.Handler
	r *Redactor
}

func (s *slogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return s.h.Enabled(ctx, l)
}

func (s *slogHandler) Handle(ctx context.Context, rec slog.Record) error {
	nr := slog.NewRecord(rec.Time, rec.Level, s.r.Redact(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(s.attr(a))
		return true
	})
	return s.h.Handle(ctx, nr)
}

func (s *slogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = s.attr(a)
	}
	return &slogHandler{h: s.h.WithAttrs(out), r: s.r}
}

func (s *slogHandler) WithGroup(name string) slog.Handler {
	return &slogHandler{h: s.h.WithGroup(s.r.Redact(name)), r: s.r}
}

func (s *slogHandler) attr(a slog.Attr) slog.Attr {
	a.Key = s.r.Redact(a.Key)
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		a.Value = slog.StringValue(s.r.Redact(v.String()))
	case slog.KindGroup:
		g := v.Group()
		out := make([]slog.Attr, len(g))
		for i, ga := range g {
			out[i] = s.attr(ga)
		}
		a.Value = slog.GroupValue(out...)
	case slog.KindAny:
		a.Value = s.anyValue(v)
	default:
		a.Value = v
	}
	return a
}

func (s *slogHandler) anyValue(v slog.Value) slog.Value {
	switch x := v.Any().(type) {
	case nil:
		return v
	case error:
		return slog.StringValue(s.r.Redact(x.Error()))
	case []byte:
		str := string(x)
		if red := s.r.Redact(str); red != str {
			return slog.StringValue(red)
		}
		return v
	default:
		// Handlers print arbitrary values with fmt (text) or encoding/json
		// (JSON). If either form contains a secret, replace the value with
		// the redacted fmt form.
		str := fmt.Sprintf("%+v", x)
		red := s.r.Redact(str)
		if red != str {
			return slog.StringValue(red)
		}
		if j, err := json.Marshal(x); err == nil {
			if js := string(j); s.r.Redact(js) != js {
				return slog.StringValue(red)
			}
		}
		return v
	}
}
