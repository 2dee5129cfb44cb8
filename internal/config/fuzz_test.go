package config_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/config"
)

// Token-shaped strings are built by concatenation so this source file does
// not itself look like it contains credentials.
var (
	fzHF      = "hf_" + strings.Repeat("Fz9q", 8) + "Ab" // hf_ + 34 alphanumerics
	fzCivitai = strings.Repeat("c0ffee12", 4)
	fzRunPod  = "rpa_" + strings.Repeat("R8T2", 10)
	fzS3ID    = "AK" + "IA" + "FUZZ1234FUZZ5678"
	fzS3Key   = strings.Repeat("s3Se/cr+", 5)
	fzCroc    = "fuzzy-orange-kilo-4471"
)

// secretLike finds values in the input that look like credentials: known
// token shapes anywhere, and values of at least 12 characters assigned to a
// credential setting (.env or YAML spelling, optionally behind a YAML alias
// or anchor sign).
var secretLike = []*regexp.Regexp{
	regexp.MustCompile(`(?:hf_|api_org_)[A-Za-z0-9]{34,}`),
	regexp.MustCompile(`rpa_[A-Za-z0-9]{20,}`),
	regexp.MustCompile(`(?:AKIA|ASIA)[A-Z0-9]{16}`),
	regexp.MustCompile(`[0-9a-f]{32}`),
	regexp.MustCompile(`(?im)^[ \t]*(?:export[ \t]+)?["']?(?:hf_token|hugging_face_hub_token|civitai_api_key|civitai_token|runpod_api_key|croc_secret|s3_access_key_id|s3_secret_access_key|scopectl_s3_access_key_id|aws_access_key_id|scopectl_s3_secret_access_key|aws_secret_access_key|agent_token|scopectl_agent_token)["']?[ \t]*[=:][ \t]*["']?[*&!]?([^\s"'#]{12,})`),
}

func secretsIn(data []byte) []string {
	var out []string
	for _, re := range secretLike {
		for _, m := range re.FindAllSubmatch(data, -1) {
			out = append(out, string(m[len(m)-1]))
		}
	}
	return out
}

// checkLoad loads a config and checks that no credential-looking value of
// the input reaches an error, a warning or a displayed value.
func checkLoad(t *testing.T, l config.Loader, data []byte) {
	t.Helper()
	cfg, err := l.Load()
	var shown []string
	if err != nil {
		if cfg != nil {
			t.Fatal("config with error")
		}
		msg := err.Error()
		if strings.ContainsAny(msg, "\n\r") {
			t.Fatalf("multi-line error %q", msg)
		}
		shown = append(shown, msg)
	} else {
		shown = append(shown, cfg.Warnings...)
		for _, s := range cfg.Secrets() {
			if len(s.Reveal()) >= 12 {
				data = append(data, "\n"+s.Reveal()...) // also look for the values as loaded
			}
		}
		for _, v := range cfg.Values {
			if v.Secret {
				if raw := cfg.Secret(v.Key); v.Value != raw.Redacted() {
					t.Fatalf("%s shown as %q, want the redacted %q", v.Key, v.Value, raw.Redacted())
				}
			}
		}
	}
	for _, s := range secretsIn(data) {
		if strings.Contains(l.ConfigFile, s) || strings.Contains(l.WorkDir, s) {
			continue // part of a path that messages name
		}
		for _, out := range shown {
			if strings.Contains(out, s) {
				t.Fatalf("secret %q from the input is shown: %q", s, out)
			}
		}
	}
}

func noEnv(string) (string, bool) { return "", false }

func FuzzDotEnv(f *testing.F) {
	for _, s := range []string{
		"HF_TOKEN=" + fzHF + "\n",
		"HF_TOKEN=" + fzHF + "\nthis line = is = broken 'quote\n",
		"HF_TOKEN=\"" + fzHF + "\nCIVITAI_API_KEY=" + fzCivitai + "\n", // unterminated quote
		"export CIVITAI_API_KEY='" + fzCivitai + "'\nRUNPOD_API_KEY: " + fzRunPod + "\n# comment\nCROC_SECRET=" + fzCroc + " # inline\n",
		"AWS_ACCESS_KEY_ID=" + fzS3ID + "\r\nAWS_SECRET_ACCESS_KEY=" + fzS3Key + "\r\nAWS_ENDPOINT_URL=https://" + fzS3ID + ":" + fzS3Key + "@s3.example.com/\r\n",
		"HF_ENDPOINT=ftp://" + fzHF + "@example.com\n",
		"CIVITAI_API_URL=" + fzCivitai + "\n",
		"SCOPECTL_AGENT_TOKEN=" + fzCivitai + fzCroc + "\n",
		"SCOPE_LORA_DIR=~/loras\nDAYDREAM_SCOPE_MODELS_DIR=/m\nHF_HOME=~\nHF_HUB_CACHE=  \n",
		"A=${HF_TOKEN}\nB=\"multi\nline\"\nC=`x`\n",
		"=novalue\n",
		"HF_TOKEN\n",
		"\x00\xff",
		"",
	} {
		f.Add([]byte(s))
	}
	// One directory per fuzzing process, reused: inputs run one at a time.
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, ".env"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		// An existing, empty config file, so that Load gets past the .env
		// to resolving and validating its values.
		cf := filepath.Join(dir, "empty.yaml")
		if err := os.WriteFile(cf, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		checkLoad(t, config.Loader{Env: noEnv, WorkDir: dir, Home: dir, ConfigFile: cf}, data)
	})
}

func FuzzConfigYAML(f *testing.F) {
	for _, s := range []string{
		"hf_token: " + fzHF + "\n",
		"hf_token: " + fzHF + "\n  bad: [\n",
		"hf_token: \"" + fzHF + "\nlora_dir: /x\n",
		"civitai_api_key: '" + fzCivitai + "'\nrunpod_api_key: " + fzRunPod + "\ncroc_secret: " + fzCroc + "\n",
		"s3_access_key_id: " + fzS3ID + "\ns3_secret_access_key: " + fzS3Key + "\ns3_endpoint: https://u:" + fzS3Key + "@s3.example.com\n",
		"croc_secret: &a " + fzCroc + "\nhf_token: *a\n",
		"croc_secret: *" + fzCroc + "\n",
		"HF_TOKEN: " + fzHF + "\n",
		"agent_token: '" + fzCroc + fzCivitai + "'\nagent_token: x\n",
		"HF_TOKEN=" + fzHF + "\n",
		"hf-token: x\n" + fzHF + ": y\n",
		"lora_dir: /x\n" + fzHF + ": y\n",
		"lora_dir: [a, b]\n",
		"lora_dir: ~/l\nlora_dir: /x\n",
		"hf_endpoint: not a url\n",
		"? [complex]\n: key\n",
		"- list\n",
		"~\n",
		"# only a comment\n",
		"a: &x [*x]\n",
		"\t\xff",
		"",
	} {
		f.Add([]byte(s))
	}
	// One directory per fuzzing process, reused: inputs run one at a time.
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		cf := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(cf, data, 0o600); err != nil {
			t.Fatal(err)
		}
		checkLoad(t, config.Loader{Env: noEnv, WorkDir: dir, Home: dir, ConfigFile: cf}, data)
	})
}
