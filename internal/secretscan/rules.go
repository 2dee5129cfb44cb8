package secretscan

import (
	"regexp"
	"strings"
	"unicode"
)

// Finding kinds.
const (
	KindHuggingFace  = "huggingface-token"
	KindCivitAI      = "civitai-api-key"
	KindRunPod       = "runpod-api-key"
	KindAWSAccessKey = "aws-access-key-id"
	KindAWSSecretKey = "aws-secret-access-key"
	KindContext7     = "context7-api-key"
	KindPrivateKey   = "private-key"
	KindCrocSecret   = "croc-secret"
	KindEnvFileInGit = "env-file-tracked-by-git"
)

// Kinds lists every kind Scan can report, for help text and tests.
var Kinds = []string{
	KindHuggingFace, KindCivitAI, KindRunPod, KindAWSAccessKey, KindAWSSecretKey,
	KindContext7, KindPrivateKey, KindCrocSecret, KindEnvFileInGit,
}

// rule matches one credential format on a single line.
type rule struct {
	kind string
	// keywords: the rule only runs when the lower-cased line contains at
	// least one of them (cheap prefilter; also how "names civitai" is done).
	keywords []string
	// caseSensitiveKeywords: like keywords but matched against the raw line.
	caseSensitiveKeywords []string
	re                    *regexp.Regexp
	// group is the submatch holding the secret value.
	group int
	// valid is an extra check on the value (after the placeholder check).
	valid func(v string) bool
	// notAfter: the value must not be followed by any of these bytes.
	// (RE2 has no look-ahead; a consuming boundary group would hide an
	// adjacent second match.)
	notAfter string
}

// Character-class boundaries: RE2 has no look-around, so a "not preceded
// by" condition is a non-capturing group and the value is a submatch.
const (
	pre    = `(?:^|[^A-Za-z0-9_])`
	assign = `["']?\s*[:=]\s*["']?`
	alnum  = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
)

var rules = []rule{
	{
		// Hugging Face user access tokens: hf_ + 34 alphanumerics (older
		// organisation API tokens: api_org_ + 34).
		kind:     KindHuggingFace,
		keywords: []string{"hf_", "api_org_"},
		re:       regexp.MustCompile(pre + `((?:hf_|api_org_)[A-Za-z0-9]{34,})`),
		group:    1,
		valid:    mixedClasses,
	},
	{
		// RunPod API keys: rpa_ + ~40 upper-case alphanumerics. Lower case
		// is accepted too (a missed leak is worse than a false alarm here;
		// the rpa_ prefix plus 20 characters is specific enough).
		kind:     KindRunPod,
		keywords: []string{"rpa_"},
		re:       regexp.MustCompile(pre + `(rpa_[A-Za-z0-9]{20,})`),
		group:    1,
		valid:    mixedClasses,
	},
	{
		// Older RunPod keys (32 alphanumerics, no prefix), only when
		// assigned to RUNPOD_API_KEY / runpod.api_key.
		kind:     KindRunPod,
		keywords: []string{"runpod"},
		re:       regexp.MustCompile(`(?i:runpod[_.]?api_?key)` + assign + `([A-Za-z0-9]{32,})`),
		group:    1,
		valid:    mixedClasses,
	},
	{
		// CivitAI API keys: 32 lower-case hex, assigned to a name that
		// contains "civitai" (CIVITAI_API_KEY=, civitai_token: ...).
		kind:     KindCivitAI,
		keywords: []string{"civitai"},
		re:       regexp.MustCompile(`(?i:civitai)[A-Za-z0-9_.-]*` + assign + `([0-9a-f]{32})`),
		group:    1,
		notAfter: alnum,
	},
	{
		// ...or a token= query parameter of a civitai.com URL.
		kind:     KindCivitAI,
		keywords: []string{"civitai.com"},
		re:       regexp.MustCompile(`(?i:civitai\.com)[^\s"'<>]*[?&](?:token|api_key|apikey)=([0-9a-f]{32})`),
		group:    1,
		notAfter: alnum,
	},
	{
		// ...or a bearer token on a line that talks to CivitAI (curl -H).
		kind:     KindCivitAI,
		keywords: []string{"civitai"},
		re:       regexp.MustCompile(`(?i:bearer)\s+([0-9a-f]{32})`),
		group:    1,
		notAfter: alnum,
	},
	{
		// AWS access key ids (long-term AKIA, temporary ASIA).
		kind:                  KindAWSAccessKey,
		caseSensitiveKeywords: []string{"AKIA", "ASIA"},
		re:                    regexp.MustCompile(`(?:^|[^A-Za-z0-9])((?:AKIA|ASIA)[A-Z0-9]{16})`),
		group:                 1,
		notAfter:              alnum,
	},
	{
		// AWS secret access keys: 40 base64 characters, only when assigned
		// to aws_secret_access_key / AWS_SECRET_ACCESS_KEY /
		// SCOPECTL_S3_SECRET_ACCESS_KEY / S3_SECRET_KEY and the like.
		kind:     KindAWSSecretKey,
		keywords: []string{"secret"},
		re: regexp.MustCompile(`(?i:secret_?access_?key|(?:aws|s3)[a-z0-9_.-]*secret[a-z0-9_]*)` + assign +
			`([A-Za-z0-9/+]{40})`),
		group:    1,
		valid:    mixedClasses,
		notAfter: alnum + "/+=",
	},
	{
		// Context7 API keys: ctx7sk- + a UUID-like string.
		kind:     KindContext7,
		keywords: []string{"ctx7sk"},
		re:       regexp.MustCompile(pre + `(ctx7sk[-_][A-Za-z0-9][A-Za-z0-9-]{19,})`),
		group:    1,
		notAfter: alnum,
	},
}

// PEM / OpenSSH / PGP private key headers.
var privateKeyRE = regexp.MustCompile(`-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----`)

// base64Body matches the start of a PEM body line (also after a literal
// "\n" escape, as in JSON service-account files).
var base64Body = regexp.MustCompile(`^(?:\\n)*\s*[A-Za-z0-9+/]{20,}`)

// CROC_SECRET=value, croc_secret: value, export CROC_SECRET="value".
var crocRE = regexp.MustCompile(`^\s*(?:export\s+)?["']?(?i:[a-z0-9_]*croc_secret)["']?\s*[:=]\s*(.*)$`)

// placeholderParts: values containing any of these (case-insensitive) are
// documentation, templates or already-redacted text, not secrets.
var placeholderParts = []string{
	"redacted", "your_", "your-", "yourtoken", "yourkey", "xxxx", "<", ">",
	"${", "{{", "example", "changeme", "change_me", "change-me", "placeholder",
	"****", "…", "...", "dummy", "replace_me", "replaceme", "insert_",
}

var placeholderValues = map[string]bool{
	"xxx": true, "secret": true, "password": true, "null": true, "none": true,
	"nil": true, "true": true, "false": true, "todo": true, "tbd": true,
	"changeme": true, "test": true, "token": true,
}

func isPlaceholder(v string) bool {
	l := strings.ToLower(v)
	if placeholderValues[l] {
		return true
	}
	for _, p := range placeholderParts {
		if strings.Contains(l, p) {
			return true
		}
	}
	// Too little variety to be random: "000000...", "abababab...".
	distinct := map[rune]bool{}
	for _, r := range l {
		distinct[r] = true
	}
	return len(distinct) < 5
}

// mixedClasses requires at least two of upper case, lower case and digits
// in the part after the prefix, which real random tokens always have.
func mixedClasses(v string) bool {
	if i := strings.LastIndexAny(v, "_-"); i >= 0 && i < 10 {
		v = v[i+1:]
	}
	var up, lo, dg bool
	for _, r := range v {
		switch {
		case unicode.IsUpper(r):
			up = true
		case unicode.IsLower(r):
			lo = true
		case unicode.IsDigit(r):
			dg = true
		}
	}
	n := 0
	for _, b := range []bool{up, lo, dg} {
		if b {
			n++
		}
	}
	return n >= 2
}

// crocValue extracts the value of a CROC_SECRET assignment's right-hand
// side and its byte offset within rhs. ok is false for empty values,
// references and code.
func crocValue(rhs string) (v string, off int, ok bool) {
	if rhs == "" {
		return "", 0, false
	}
	switch q := rhs[0]; q {
	case '"', '\'', '`':
		end := strings.IndexByte(rhs[1:], q)
		if end < 0 {
			return "", 0, false
		}
		v, off = rhs[1:1+end], 1
	default:
		end := len(rhs)
		if i := strings.Index(rhs, " #"); i >= 0 {
			end = i
		}
		v = strings.TrimSpace(rhs[:end])
		if i := strings.IndexAny(v, " \t;,"); i >= 0 {
			v = v[:i]
		}
	}
	// Code phrases have no spaces or brackets; code such as
	// "CROC_SECRET=" + s or os.environ["CROC_SECRET"] does.
	if len(v) < 4 || strings.HasPrefix(v, "$") || strings.HasPrefix(v, "%") ||
		strings.ContainsAny(v, "()[]{} \t") {
		return "", 0, false
	}
	return v, off, true
}
