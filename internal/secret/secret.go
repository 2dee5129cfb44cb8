// Package secret holds credentials (Hugging Face, CivitAI, RunPod, S3, croc)
// in a type that redacts itself everywhere it can be printed, logged or
// marshalled, plus a Redactor that scrubs known secret values out of
// arbitrary text such as library error messages and subprocess output.
//
// The raw value is only reachable through Secret.Reveal, which should be
// called at the last moment (building an HTTP header, setting a subprocess
// environment variable). Secrets must never be passed as process arguments.
package secret

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"unicode/utf8"
)

// Secret holds a credential. Its zero value is "unset". Every way of
// printing it (fmt verbs, JSON, text, slog) yields a redacted preview.
//
// The value is kept behind a pointer so that even reflection-based printing
// of a struct holding a Secret in an unexported field (where fmt cannot call
// methods) prints only a pointer address, never the value.
//
// Secret deliberately implements no Unmarshal methods, so secrets cannot be
// populated from untrusted JSON/YAML/text decoded into a struct.
type Secret struct {
	v *string
}

// New returns a Secret holding v. New("") returns the unset Secret.
func New(v string) Secret {
	if v == "" {
		return Secret{}
	}
	return Secret{v: &v}
}

// Reveal returns the raw value ("" when unset). It is the only way to get it.
func (s Secret) Reveal() string {
	if s.v == nil {
		return ""
	}
	return *s.v
}

// IsSet reports whether the secret holds a non-empty value.
func (s Secret) IsSet() bool { return s.v != nil && *s.v != "" }

// IsZero reports whether the secret is unset; it lets `json:",omitzero"` work.
func (s Secret) IsZero() bool { return !s.IsSet() }

// Equal reports whether two secrets hold the same value, in constant time
// with respect to the contents.
func (s Secret) Equal(o Secret) bool {
	return subtle.ConstantTimeCompare([]byte(s.Reveal()), []byte(o.Reveal())) == 1
}

// knownPrefixes are credential prefixes that are not themselves secret and
// help a human tell which credential a preview refers to. Longest first
// matters only where one is a prefix of another.
var knownPrefixes = []string{
	"github_pat_",
	"api_org_",
	"ctx7sk-",
	"sk-proj-",
	"sk-ant-",
	"hf_",
	"rpa_",
	"ghp_",
	"gho_",
	"ghs_",
	"xoxb-",
	"xoxp-",
	"glpat-",
	"AKIA",
	"ASIA",
	"sk-",
}

const (
	// minPreviewLen: values shorter than this show nothing of themselves.
	minPreviewLen = 12
	// minTailBody: the non-prefix part must be at least this long before
	// its last 4 characters are shown (so at most a third of it leaks).
	minTailBody = 12
	tailLen     = 4
	shortMask   = "****"
	ellipsis    = "…"
)

// Redacted returns a short preview that is safe to print: "" when unset;
// "****" for values shorter than 12 bytes; otherwise a known non-secret
// prefix (hf_, rpa_, ctx7sk-, AKIA, sk-, ...) followed by "…" and the last
// 4 characters, e.g. "hf_…Xy3Q". At most 4 characters of the non-prefix
// part are ever shown, and none when that part is shorter than 12 bytes.
func (s Secret) Redacted() string {
	if !s.IsSet() {
		return ""
	}
	return redact(*s.v)
}

func redact(v string) string {
	if len(v) < minPreviewLen {
		return shortMask
	}
	prefix := ""
	for _, p := range knownPrefixes {
		if strings.HasPrefix(v, p) {
			prefix = p
			break
		}
	}
	body := v[len(prefix):]
	if len(body) < minTailBody || !utf8.ValidString(body) {
		if prefix == "" {
			return shortMask
		}
		return prefix + ellipsis
	}
	// last 4 runes, printable only
	n := 0
	i := len(body)
	for i > 0 && n < tailLen {
		_, size := utf8.DecodeLastRuneInString(body[:i])
		i -= size
		n++
	}
	tail := body[i:]
	for _, r := range tail {
		if r < 0x20 || r == 0x7f {
			return prefix + ellipsis
		}
	}
	return prefix + ellipsis + tail
}

// String returns Redacted(), or "<unset>" when the secret is unset.
func (s Secret) String() string {
	if !s.IsSet() {
		return "<unset>"
	}
	return s.Redacted()
}

// GoString (used by %#v) returns a redacted Go-like representation.
func (s Secret) GoString() string {
	if !s.IsSet() {
		return "secret.Secret{}"
	}
	return fmt.Sprintf("secret.Secret(%q)", s.Redacted())
}

// Format implements fmt.Formatter so that every verb prints the redacted
// form: %v %s %d %x %X %+v print String(), %q quotes it, %#v prints
// GoString(). Width, precision and the '-' flag are honoured; %x/%X never
// hex-encode anything.
func (s Secret) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		fmt.Fprint(f, s.GoString())
	case verb == 'q':
		// reuse width/flags, e.g. %-20q
		fmt.Fprintf(f, fmt.FormatString(f, 'q'), s.String())
	default:
		fmt.Fprintf(f, sDirective(f), s.String())
	}
}

// sDirective rebuilds a %s directive with the caller's width, precision and
// '-' flag (other flags make no sense for the redacted string).
func sDirective(f fmt.State) string {
	var b strings.Builder
	b.WriteByte('%')
	if f.Flag('-') {
		b.WriteByte('-')
	}
	if w, ok := f.Width(); ok {
		fmt.Fprintf(&b, "%d", w)
	}
	if p, ok := f.Precision(); ok {
		fmt.Fprintf(&b, ".%d", p)
	}
	b.WriteByte('s')
	return b.String()
}

// MarshalJSON returns the JSON string of Redacted(), or null when unset.
func (s Secret) MarshalJSON() ([]byte, error) {
	if !s.IsSet() {
		return []byte("null"), nil
	}
	return json.Marshal(s.Redacted())
}

// MarshalText returns Redacted() ("" when unset). It is used by
// encoding/json for map keys, by yaml.v3 and by other text encoders.
func (s Secret) MarshalText() ([]byte, error) {
	return []byte(s.Redacted()), nil
}

// LogValue implements slog.LogValuer: loggers see String().
func (s Secret) LogValue() slog.Value {
	return slog.StringValue(s.String())
}

var (
	_ fmt.Formatter  = Secret{}
	_ fmt.Stringer   = Secret{}
	_ fmt.GoStringer = Secret{}
	_ json.Marshaler = Secret{}
	_ slog.LogValuer = Secret{}
)
