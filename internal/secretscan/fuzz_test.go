package secretscan_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/daydreamlive/scopectl/internal/secretscan"
)

// previewPrefixes are the non-secret credential prefixes a redacted preview
// may start with (internal/secret knownPrefixes).
var previewPrefixes = []string{
	"github_pat_", "api_org_", "ctx7sk-", "sk-proj-", "sk-ant-", "hf_", "rpa_",
	"ghp_", "gho_", "ghs_", "xoxb-", "xoxp-", "glpat-", "AKIA", "ASIA", "sk-",
}

// Token-shaped strings are built by concatenation so this source file does
// not itself look like it contains credentials.
var fuzzSeeds = []string{
	"HF_TOKEN=hf_" + strings.Repeat("A1b2", 9) + "\n",
	"token: 'api_" + "org_" + strings.Repeat("Qw3e", 9) + "'\r\nRUNPOD_API_KEY=rpa_" + strings.Repeat("K7Q2", 10),
	"runpod.api_key = \"" + strings.Repeat("a9B8c7D6", 4) + "\"",
	"export CIVITAI_API_KEY=" + strings.Repeat("0f1e2d3c", 4) + " # civitai",
	"curl https://civitai.com/api/download/models/1?type=Model&token=" + strings.Repeat("0f1e2d3c", 4),
	"curl -H 'Authorization: Bearer " + strings.Repeat("0f1e2d3c", 4) + "' https://civitai.com/api/v1/models",
	"aws_access_key_id = AK" + "IAQ3EGRT5TZK2V7PX4\naws_secret_access_key = " + strings.Repeat("aB3/dE6+gH9k", 3) + "Zz12\n",
	"{\"key\": \"ctx7" + "sk-0b5f3c1e-7a2d-4c8b-9e6f-1d2a3b4c5d6e\"}",
	"CROC_" + "SECRET=\"7731-orange-kilo-delta\"\nexport croc_secret: 'x'\nCROC_SECRET=\"unterminated",
	"-----BEGIN " + "OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n",
	"\"private_key\": \"-----BEGIN " + "PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n\"",
	"HF_TOKEN=hf_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx # placeholder\nHF_TOKEN=${HF_TOKEN}\nhf_" + strings.Repeat("ab", 17),
	"ÄÖÜ hf_" + strings.Repeat("Zy9x", 9) + "…\tCIVITAI_TOKEN=" + strings.Repeat("9e8d7c6b", 4) + "Q",
	"hf_\xff\xfe" + strings.Repeat("A1b2", 9) + "\x00",
	"",
}

func FuzzScan(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	// One directory per fuzzing process, reused: inputs run one at a time.
	path := filepath.Join(f.TempDir(), "input.txt")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		fs, err := secretscan.Scan(context.Background(), []string{path}, secretscan.Options{})
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(data), "\n")
		for _, fd := range fs {
			if fd.Path != path || !slices.Contains(secretscan.Kinds, fd.Kind) {
				t.Fatalf("finding %+v", fd)
			}
			if fd.Line < 1 || fd.Line > len(lines) || fd.Column < 1 {
				t.Fatalf("finding %+v outside the %d-line input", fd, len(lines))
			}
			line := strings.TrimSuffix(lines[fd.Line-1], "\r")
			rest, ok := fromColumn(line, fd.Column)
			if !ok {
				t.Fatalf("finding %+v: column past the end of line %q", fd, line)
			}
			checkPreview(t, fd, rest)
		}
	})
}

// fromColumn returns line from the 1-based character column on (characters
// counted as utf8.RuneCountInString counts them, invalid bytes one each).
func fromColumn(line string, col int) (string, bool) {
	for i := range line {
		if col == 1 {
			return line[i:], true
		}
		col--
	}
	return "", false
}

// checkPreview: a preview shows at most a known non-secret prefix and the
// last 4 characters of the value, separated by "…", so no run of 12 or
// more characters of a secret ever appears in it. Private keys are reported by their PEM header,
// which is not secret.
func checkPreview(t *testing.T, fd secretscan.Finding, rest string) {
	t.Helper()
	if fd.Kind == secretscan.KindPrivateKey {
		if !strings.HasPrefix(fd.Preview, "-----BEGIN ") || !strings.HasSuffix(fd.Preview, "-----") ||
			!strings.Contains(fd.Preview, "PRIVATE KEY") || !strings.HasPrefix(rest, fd.Preview) {
			t.Fatalf("private key preview %q at %q", fd.Preview, rest)
		}
		return
	}
	if fd.Preview == "****" {
		return
	}
	prefix, tail, ok := strings.Cut(fd.Preview, "…")
	if !ok || strings.Contains(tail, "…") {
		t.Fatalf("preview %q of %+v is not redacted", fd.Preview, fd)
	}
	if prefix != "" && !slices.Contains(previewPrefixes, prefix) {
		t.Fatalf("preview %q of %+v shows %q, not a known prefix", fd.Preview, fd, prefix)
	}
	if n := utf8.RuneCountInString(tail); n > 4 {
		t.Fatalf("preview %q of %+v shows %d characters of the value", fd.Preview, fd, n)
	}
	if !strings.HasPrefix(rest, prefix) || !strings.Contains(rest[len(prefix):], tail) {
		t.Fatalf("preview %q of %+v does not describe the value at %q", fd.Preview, fd, rest)
	}
}
