package config

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/secret"
)

// Canary secret values; must never appear in any output.
var (
	canaryHF      = "hf_" + "CANARYcanaryCANARYcanary0001"
	canaryCivitai = "CANARYcivitai" + "CANARYcanary0002"
	canaryRunPod  = "rpa_" + "CANARYCANARYCANARY0003"
	canaryCroc    = "canary-croc-" + "CANARY0004"
	canaryS3ID    = "AKIA" + "CANARYCANARY0005"
	canaryS3Key   = "canary/S3/secret/" + "CANARYCANARY0006"
	canaryAgent   = "agent-token-" + "CANARYCANARY0007"
	canaryServe   = "serve-token-" + "CANARYCANARY0008"
	canaries      = []string{canaryHF, canaryCivitai, canaryRunPod, canaryCroc, canaryS3ID, canaryS3Key, canaryAgent, canaryServe}
)

type fixture struct {
	t    *testing.T
	home string
	wd   string
	env  map[string]string
	// testFlags is used by TestPrecedenceMatrix.
	testFlags map[string]string
}

func newFixture(t *testing.T) *fixture {
	root := t.TempDir()
	f := &fixture{t: t, home: filepath.Join(root, "home"), wd: filepath.Join(root, "work"), env: map[string]string{}}
	for _, d := range []string{f.home, f.wd} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *fixture) loader() Loader {
	return Loader{
		Env: func(k string) (string, bool) {
			v, ok := f.env[k]
			return v, ok
		},
		WorkDir: f.wd,
		Home:    f.home,
	}
}

func (f *fixture) configPath() string {
	return filepath.Join(f.home, ".config", "scopectl", "config.yaml")
}

func (f *fixture) writeConfig(content string) string {
	f.t.Helper()
	p := f.configPath()
	writeFile(f.t, p, content, 0o600)
	return p
}

func (f *fixture) writeDotEnv(content string) string {
	f.t.Helper()
	p := filepath.Join(f.wd, ".env")
	writeFile(f.t, p, content, 0o600)
	return p
}

func writeFile(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // umask-proof
		t.Fatal(err)
	}
}

func (f *fixture) load() *Config {
	f.t.Helper()
	cfg, err := f.loader().Load()
	if err != nil {
		f.t.Fatal(err)
	}
	return cfg
}

func noCanary(t *testing.T, what, out string) {
	t.Helper()
	for _, c := range canaries {
		if strings.Contains(out, c) {
			t.Errorf("%s leaked canary %q:\n%s", what, c, out)
		}
	}
}

func TestDefaults(t *testing.T) {
	f := newFixture(t)
	cfg := f.load()
	h := f.home
	checks := map[string]string{
		cfg.LoRADir:    filepath.Join(h, ".daydream-scope", "models", "lora"),
		cfg.DataDir:    filepath.Join(h, ".local", "share", "scopectl"),
		cfg.HFHome:     filepath.Join(h, ".cache", "huggingface"),
		cfg.HFHubCache: filepath.Join(h, ".cache", "huggingface", "hub"),
		cfg.HFEndpoint: "https://huggingface.co",
		cfg.CivitAIURL: "https://civitai.com",
	}
	for got, want := range checks {
		if got != want {
			t.Errorf("got %q want %q", got, want)
		}
	}
	if cfg.HFToken.IsSet() || cfg.S3Region != "" || len(cfg.Secrets()) != 0 {
		t.Error("unexpected values")
	}
	if len(cfg.Values) != len(Keys()) {
		t.Fatalf("Values has %d entries, want %d", len(cfg.Values), len(Keys()))
	}
	for i, v := range cfg.Values {
		if v.Key != Keys()[i].Name || v.Source != SourceDefault {
			t.Errorf("value %d = %+v", i, v)
		}
	}
	if v, _ := cfg.Lookup(KeyHFHubCache); v.Origin != KeyHFHome {
		t.Errorf("hf_hub_cache origin %q", v.Origin)
	}
	if cfg.ConfigFile != "" || cfg.DotEnvFile != "" || len(cfg.Warnings) != 0 {
		t.Errorf("files/warnings: %q %q %q", cfg.ConfigFile, cfg.DotEnvFile, cfg.Warnings)
	}
}

func TestXDG(t *testing.T) {
	f := newFixture(t)
	xdg := t.TempDir()
	f.env["XDG_DATA_HOME"] = filepath.Join(xdg, "data")
	f.env["XDG_CACHE_HOME"] = filepath.Join(xdg, "cache")
	f.env["XDG_CONFIG_HOME"] = filepath.Join(xdg, "conf")
	writeFile(t, filepath.Join(xdg, "conf", "scopectl", "config.yaml"), "s3_region: eu-west-1\n", 0o600)
	cfg := f.load()
	if cfg.DataDir != filepath.Join(xdg, "data", "scopectl") {
		t.Errorf("DataDir %q", cfg.DataDir)
	}
	if cfg.HFHome != filepath.Join(xdg, "cache", "huggingface") || cfg.HFHubCache != filepath.Join(xdg, "cache", "huggingface", "hub") {
		t.Errorf("HFHome %q HFHubCache %q", cfg.HFHome, cfg.HFHubCache)
	}
	if cfg.S3Region != "eu-west-1" || cfg.ConfigFile != filepath.Join(xdg, "conf", "scopectl", "config.yaml") {
		t.Errorf("config file not read from XDG_CONFIG_HOME: %q %q", cfg.S3Region, cfg.ConfigFile)
	}
	if v, _ := cfg.Lookup(KeyDataDir); v.Source != SourceDefault || v.Origin != "XDG_DATA_HOME" {
		t.Errorf("data_dir value %+v", v)
	}
	// Relative XDG paths are ignored, per the XDG spec.
	f.env["XDG_DATA_HOME"] = "rel/data"
	f.env["XDG_CONFIG_HOME"] = "rel/conf"
	cfg = f.load()
	if cfg.DataDir != filepath.Join(f.home, ".local", "share", "scopectl") || cfg.ConfigFile != "" {
		t.Errorf("relative XDG not ignored: %q %q", cfg.DataDir, cfg.ConfigFile)
	}
	p, explicit, err := f.loader().ConfigPath()
	if err != nil || explicit || p != f.configPath() {
		t.Errorf("ConfigPath = %q %v %v", p, explicit, err)
	}
	// HF_HOME moves the hub cache with it.
	f.env["HF_HOME"] = "/srv/hf"
	cfg = f.load()
	if cfg.HFHubCache != filepath.FromSlash("/srv/hf/hub") {
		t.Errorf("HFHubCache %q", cfg.HFHubCache)
	}
}

// TestPrecedenceMatrix sets a key in every subset of the layers and checks
// that the highest layer wins.
func TestPrecedenceMatrix(t *testing.T) {
	type layer struct {
		src Source
		set func(f *fixture, key, env, v string)
	}
	var fileBuf, dotBuf strings.Builder
	layers := []layer{ // highest first
		{SourceFlag, func(f *fixture, key, env, v string) { f.testFlags[key] = v }},
		{SourceEnv, func(f *fixture, key, env, v string) { f.env[env] = v }},
		{SourceDotEnv, func(f *fixture, key, env, v string) { fmt.Fprintf(&dotBuf, "%s=%s\n", env, v) }},
		{SourceConfigFile, func(f *fixture, key, env, v string) { fmt.Fprintf(&fileBuf, "%s: %s\n", key, v) }},
	}
	keys := []struct {
		key, env, def string
		secret        bool
	}{
		{KeyS3Region, "AWS_REGION", "", false},
		{KeyHFEndpoint, "HF_ENDPOINT", "https://huggingface.co", false},
		{KeyLoRADir, "DAYDREAM_SCOPE_LORA_DIR", "", false},
		{KeyHFToken, "HF_TOKEN", "", true},
	}
	for _, k := range keys {
		for mask := 0; mask < 1<<len(layers); mask++ {
			f := newFixture(t)
			f.testFlags = map[string]string{}
			fileBuf.Reset()
			dotBuf.Reset()
			want, wantSrc := k.def, SourceDefault
			if k.key == KeyLoRADir {
				want = filepath.Join(f.home, ".daydream-scope", "models", "lora")
			}
			for i := len(layers) - 1; i >= 0; i-- {
				if mask&(1<<i) == 0 || (k.secret && layers[i].src == SourceFlag) {
					continue
				}
				v := fmt.Sprintf("/%s-%s", layers[i].src, k.key)
				if k.key == KeyHFEndpoint {
					v = "https://" + string(layers[i].src) + ".example.com"
				}
				if k.secret {
					v = canaryHF + string(layers[i].src)
				}
				layers[i].set(f, k.key, k.env, v)
				want, wantSrc = v, layers[i].src
			}
			f.writeDotEnv(dotBuf.String())
			f.writeConfig(fileBuf.String())
			l := f.loader()
			l.Flags = f.testFlags
			cfg, err := l.Load()
			if err != nil {
				t.Fatalf("%s mask %b: %v", k.key, mask, err)
			}
			v, ok := cfg.Lookup(k.key)
			if !ok {
				t.Fatalf("Lookup(%s) failed", k.key)
			}
			if v.Source != wantSrc {
				t.Errorf("%s mask %04b: source %s, want %s (%+v)", k.key, mask, v.Source, wantSrc, v)
			}
			if k.secret {
				if cfg.HFToken.Reveal() != want {
					t.Errorf("%s mask %04b: wrong secret won (source %s)", k.key, mask, v.Source)
				}
				if want != "" && v.Value != secret.New(want).Redacted() {
					t.Errorf("secret Value not redacted form: %q", v.Value)
				}
				noCanary(t, "Value", v.Value)
			} else if v.Value != filepath.FromSlash(want) && v.Value != want {
				t.Errorf("%s mask %04b: value %q, want %q", k.key, mask, v.Value, want)
			}
		}
	}
}

func TestDotEnvNeverOverridesRealEnv(t *testing.T) {
	f := newFixture(t)
	f.env["HF_TOKEN"] = canaryHF + "REAL"
	f.env["HUGGING_FACE_HUB_TOKEN"] = ""            // empty counts as unset
	f.env["CIVITAI_TOKEN"] = canaryCivitai + "REAL" // alias in the real env
	f.env["RUNPOD_API_KEY"] = ""                    // empty: .env may fill it
	f.writeDotEnv(strings.Join([]string{
		"# comment",
		"HF_TOKEN=" + canaryHF + "DOTENV",
		"CIVITAI_API_KEY=" + canaryCivitai + "DOTENV", // primary name, but only in .env
		"RUNPOD_API_KEY=" + canaryRunPod,
		"SCOPECTL_TEST_UNUSED_VAR=1",
	}, "\n"))
	cfg := f.load()
	if cfg.HFToken.Reveal() != canaryHF+"REAL" {
		t.Error(".env overrode HF_TOKEN from the environment")
	}
	if cfg.CivitAIKey.Reveal() != canaryCivitai+"REAL" {
		t.Error("env (any alias) must beat .env")
	}
	if cfg.RunPodKey.Reveal() != canaryRunPod {
		t.Error("empty env var should let .env fill it")
	}
	if v, _ := cfg.Lookup(KeyRunPodKey); v.Source != SourceDotEnv || v.Origin != ".env:4" {
		t.Errorf("runpod value %+v", v)
	}
	if v, _ := cfg.Lookup(KeyHFToken); v.Source != SourceEnv || v.Origin != "HF_TOKEN" {
		t.Errorf("hf value %+v", v)
	}
	if _, ok := os.LookupEnv("SCOPECTL_TEST_UNUSED_VAR"); ok {
		t.Error("Load modified the process environment")
	}
}

func TestAliases(t *testing.T) {
	cases := []struct {
		env    map[string]string
		key    string
		want   string
		origin string
	}{
		{map[string]string{"CIVITAI_TOKEN": canaryCivitai}, KeyCivitAIKey, canaryCivitai, "CIVITAI_TOKEN"},
		{map[string]string{"CIVITAI_TOKEN": "other-value-xyz", "CIVITAI_API_KEY": canaryCivitai}, KeyCivitAIKey, canaryCivitai, "CIVITAI_API_KEY"},
		{map[string]string{"HUGGING_FACE_HUB_TOKEN": canaryHF}, KeyHFToken, canaryHF, "HUGGING_FACE_HUB_TOKEN"},
		{map[string]string{"DAYDREAM_SCOPE_LORA_DIR": "/scope/lora"}, KeyLoRADir, "/scope/lora", "DAYDREAM_SCOPE_LORA_DIR"},
		{map[string]string{"DAYDREAM_SCOPE_LORA_DIR": "/scope/lora", "SCOPE_LORA_DIR": "/mine"}, KeyLoRADir, "/mine", "SCOPE_LORA_DIR"},
		{map[string]string{"DAYDREAM_SCOPE_MODELS_DIR": "/models"}, KeyLoRADir, "/models/lora", "DAYDREAM_SCOPE_MODELS_DIR"},
		{map[string]string{"DAYDREAM_SCOPE_MODELS_DIR": "/models", "DAYDREAM_SCOPE_LORA_DIR": "/l"}, KeyLoRADir, "/l", "DAYDREAM_SCOPE_LORA_DIR"},
		{map[string]string{"AWS_ACCESS_KEY_ID": canaryS3ID}, KeyS3AccessKey, canaryS3ID, "AWS_ACCESS_KEY_ID"},
		{map[string]string{"AWS_ACCESS_KEY_ID": "AKIA-other", "SCOPECTL_S3_ACCESS_KEY_ID": canaryS3ID}, KeyS3AccessKey, canaryS3ID, "SCOPECTL_S3_ACCESS_KEY_ID"},
		{map[string]string{"AWS_SECRET_ACCESS_KEY": canaryS3Key}, KeyS3SecretKey, canaryS3Key, "AWS_SECRET_ACCESS_KEY"},
		{map[string]string{"AWS_ENDPOINT_URL": "https://r2.example.com/"}, KeyS3Endpoint, "https://r2.example.com", "AWS_ENDPOINT_URL"},
		{map[string]string{"AWS_DEFAULT_REGION": "auto", "AWS_REGION": "us-east-1"}, KeyS3Region, "us-east-1", "AWS_REGION"},
		{map[string]string{"SCOPECTL_S3_REGION": "eu", "AWS_REGION": "us-east-1"}, KeyS3Region, "eu", "SCOPECTL_S3_REGION"},
		{map[string]string{"HUGGINGFACE_HUB_CACHE": "/old/cache"}, KeyHFHubCache, "/old/cache", "HUGGINGFACE_HUB_CACHE"},
		{map[string]string{"CROC_SECRET": canaryCroc}, KeyCrocSecret, canaryCroc, "CROC_SECRET"},
	}
	for _, c := range cases {
		f := newFixture(t)
		f.env = c.env
		cfg := f.load()
		v, _ := cfg.Lookup(c.key)
		if v.Origin != c.origin || v.Source != SourceEnv {
			t.Errorf("%v: %s origin %q source %s, want %q", c.env, c.key, v.Origin, v.Source, c.origin)
		}
		got := v.Value
		if v.Secret {
			got = ""
			for _, s := range []secret.Secret{cfg.HFToken, cfg.CivitAIKey, cfg.RunPodKey, cfg.CrocSecret, cfg.S3AccessKey, cfg.S3SecretKey} {
				if s.Reveal() == c.want {
					got = c.want
				}
			}
		}
		if got != filepath.FromSlash(c.want) {
			t.Errorf("%v: %s = %q, want %q", c.env, c.key, got, c.want)
		}
	}
}

func TestTildeAndOrigins(t *testing.T) {
	f := newFixture(t)
	p := f.writeConfig("# scopectl\ndata_dir: ~/scope-data\nhf_home: '~'\n")
	f.writeDotEnv("\n\nSCOPE_LORA_DIR=~/loras\n")
	l := f.loader()
	l.Flags = map[string]string{KeyHFHubCache: "~/hub"}
	cfg, err := l.Load()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != filepath.Join(f.home, "scope-data") || cfg.HFHome != f.home || cfg.LoRADir != filepath.Join(f.home, "loras") || cfg.HFHubCache != filepath.Join(f.home, "hub") {
		t.Errorf("tilde: %q %q %q %q", cfg.DataDir, cfg.HFHome, cfg.LoRADir, cfg.HFHubCache)
	}
	want := map[string]Value{
		KeyDataDir:    {Source: SourceConfigFile, Origin: p + ":2"},
		KeyHFHome:     {Source: SourceConfigFile, Origin: p + ":3"},
		KeyLoRADir:    {Source: SourceDotEnv, Origin: ".env:3"},
		KeyHFHubCache: {Source: SourceFlag, Origin: "--hf-hub-cache"},
	}
	for k, w := range want {
		v, _ := cfg.Lookup(k)
		if v.Source != w.Source || v.Origin != w.Origin {
			t.Errorf("%s: %s %q, want %s %q", k, v.Source, v.Origin, w.Source, w.Origin)
		}
	}
	if cfg.ConfigFile != p || cfg.DotEnvFile != filepath.Join(f.wd, ".env") {
		t.Errorf("files %q %q", cfg.ConfigFile, cfg.DotEnvFile)
	}
}

func TestConfigFileErrors(t *testing.T) {
	cases := []struct {
		content string
		want    []string
	}{
		{"lora_dir: /x\nhf_tokn: " + canaryHF + "\n", []string{":2:", `unknown key "hf_tokn"`}},
		{"HF_TOKEN: " + canaryHF + "\n", []string{":1:", `"HF_TOKEN"`, `did you mean "hf_token"`}},
		{"lora_dir: [a, b]\n", []string{":1:", "lora_dir"}},
		{"lora_dir: /a\nlora_dir: /b\n", []string{":2:", "duplicate"}},
		{"- a\n- b\n", []string{":1:", "mapping"}},
		{"hf_token: \"" + canaryHF + "\n  bad: [\n", []string{"config.yaml"}},
		{"lora_dir: /x\n\tfoo: " + canaryHF + "\n", []string{"config.yaml"}},
	}
	for _, c := range cases {
		f := newFixture(t)
		p := f.writeConfig(c.content)
		_, err := f.loader().Load()
		if err == nil {
			t.Errorf("%q: no error", c.content)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, p) || strings.Contains(msg, "\n") {
			t.Errorf("error must be one line naming %s: %q", p, msg)
		}
		for _, w := range c.want {
			if !strings.Contains(msg, w) {
				t.Errorf("error %q lacks %q", msg, w)
			}
		}
		noCanary(t, "config error", msg)
	}
	// Empty and comment-only files are fine.
	for _, content := range []string{"", "# nothing\n", "~\n", "hf_token:\n"} {
		f := newFixture(t)
		f.writeConfig(content)
		if _, err := f.loader().Load(); err != nil {
			t.Errorf("%q: %v", content, err)
		}
	}
	// An explicit config file must exist; the default one may not.
	f := newFixture(t)
	l := f.loader()
	l.ConfigFile = filepath.Join(f.home, "nope.yaml")
	if _, err := l.Load(); err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Errorf("explicit missing config: %v", err)
	}
	f.env["SCOPECTL_CONFIG"] = filepath.Join(f.home, "via-env.yaml")
	writeFile(t, f.env["SCOPECTL_CONFIG"], "s3_region: from-env-path\n", 0o600)
	if cfg := f.load(); cfg.S3Region != "from-env-path" {
		t.Errorf("SCOPECTL_CONFIG not used: %q", cfg.S3Region)
	}
}

func TestDotEnvErrors(t *testing.T) {
	for _, c := range []struct {
		content string
		line    string
	}{
		{"A=1\nB=2\nHF_TOKEN=\"" + canaryHF + "\nC=3\n", ":3:"},                          // unterminated quote
		{"A=1\nMULTI=\"x\ny\"\nbad-key-" + canaryHF + "=1\nHF_TOKEN=" + canaryHF, ":4:"}, // bad key after multi-line value
	} {
		f := newFixture(t)
		p := f.writeDotEnv(c.content)
		_, err := f.loader().Load()
		if err == nil {
			t.Fatalf("%q: expected error", c.content)
		}
		msg := err.Error()
		if !strings.Contains(msg, p+c.line) || strings.Contains(msg, "\n") {
			t.Errorf("error %q should be one line naming %s%s", msg, p, c.line)
		}
		noCanary(t, ".env error", msg)
	}
}

func TestSecretFlagRejected(t *testing.T) {
	f := newFixture(t)
	l := f.loader()
	l.Flags = map[string]string{KeyHFToken: canaryHF}
	_, err := l.Load()
	if err == nil || !strings.Contains(err.Error(), "flag") {
		t.Fatalf("expected error, got %v", err)
	}
	noCanary(t, "flag error", err.Error())
	l.Flags = map[string]string{"bogus": "1"}
	if _, err := l.Load(); err == nil {
		t.Fatal("unknown flag key accepted")
	}
}

func TestURLValidation(t *testing.T) {
	f := newFixture(t)
	f.env["HF_ENDPOINT"] = "ftp://" + canaryHF + "@mirror"
	_, err := f.loader().Load()
	if err == nil || !strings.Contains(err.Error(), "HF_ENDPOINT") {
		t.Fatalf("expected URL error, got %v", err)
	}
	noCanary(t, "url error", err.Error())
	f.env["HF_ENDPOINT"] = "https://user:" + canaryHF + "@mirror.example.com/"
	cfg := f.load()
	v, _ := cfg.Lookup(KeyHFEndpoint)
	if v.Value != "https://xxxxx@mirror.example.com" {
		t.Errorf("display value %q", v.Value)
	}
	if cfg.HFEndpoint != "https://user:"+canaryHF+"@mirror.example.com" {
		t.Errorf("HFEndpoint %q", cfg.HFEndpoint)
	}
}

func TestPermissionWarnings(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no unix permissions")
	}
	f := newFixture(t)
	cp := f.writeConfig("hf_token: " + canaryHF + "\nlora_dir: /x\n")
	dp := f.writeDotEnv("CROC_SECRET=" + canaryCroc + "\n")
	if cfg := f.load(); len(cfg.Warnings) != 0 {
		t.Errorf("0600 files warned: %q", cfg.Warnings)
	}
	for _, p := range []string{cp, dp} {
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := f.load()
	if len(cfg.Warnings) != 2 {
		t.Fatalf("warnings = %q", cfg.Warnings)
	}
	all := strings.Join(cfg.Warnings, "\n")
	for _, w := range []string{cp, dp, "0644", "chmod 600", "hf_token", "CROC_SECRET"} {
		if !strings.Contains(all, w) {
			t.Errorf("warnings lack %q: %s", w, all)
		}
	}
	noCanary(t, "warnings", all)
	// World-readable files without secrets are fine.
	f2 := newFixture(t)
	writeFile(t, f2.configPath(), "lora_dir: /x\n", 0o644)
	writeFile(t, filepath.Join(f2.wd, ".env"), "SCOPE_LORA_DIR=/y\nOTHER_TOKEN=abc\n", 0o644)
	if cfg := f2.load(); len(cfg.Warnings) != 0 {
		t.Errorf("warned without secrets: %q", cfg.Warnings)
	}
}

// TestCanary puts a secret in every layer and checks that nothing the CLI
// might print contains one.
func TestCanary(t *testing.T) {
	f := newFixture(t)
	f.env["HF_TOKEN"] = canaryHF
	f.env["AWS_ACCESS_KEY_ID"] = canaryS3ID
	f.env["SCOPECTL_AGENT_TOKEN"] = canaryAgent
	f.env["SCOPECTL_SERVE_TOKEN"] = canaryServe
	f.writeDotEnv("CIVITAI_TOKEN=" + canaryCivitai + "\nCROC_SECRET='" + canaryCroc + "'\n")
	writeFile(t, f.configPath(), "runpod_api_key: "+canaryRunPod+"\ns3_secret_access_key: \""+canaryS3Key+"\"\n", 0o644)
	cfg := f.load()

	if len(cfg.Secrets()) != 8 {
		t.Fatalf("Secrets() = %d, want 8", len(cfg.Secrets()))
	}
	revealed := map[string]bool{}
	for _, s := range cfg.Secrets() {
		revealed[s.Reveal()] = true
	}
	for _, c := range canaries {
		if !revealed[c] {
			t.Errorf("canary %q not loaded", c)
		}
	}

	var outs []string
	b, _ := json.Marshal(cfg.Values)
	outs = append(outs, string(b))
	b, _ = json.Marshal(cfg)
	outs = append(outs, string(b))
	b, _ = json.MarshalIndent(cfg, "", "  ")
	outs = append(outs, string(b))
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		outs = append(outs, fmt.Sprintf(verb, cfg), fmt.Sprintf(verb, *cfg))
	}
	outs = append(outs, cfg.Warnings...)
	for _, v := range cfg.Values {
		outs = append(outs, v.Value, v.Origin)
		if v.Secret && v.Value == "" {
			t.Errorf("secret %s has empty redacted value", v.Key)
		}
	}
	for _, o := range outs {
		noCanary(t, "config output", o)
	}
	if v, _ := cfg.Lookup(KeyHFToken); v.Value != "hf_…0001" || !v.Secret {
		t.Errorf("hf_token value %+v", v)
	}

	// Registering in a Redactor scrubs them from arbitrary text.
	var r secret.Redactor
	for _, s := range cfg.Secrets() {
		r.Add(s)
	}
	noCanary(t, "redactor", r.Redact(strings.Join(canaries, " ")))
}

func TestKeys(t *testing.T) {
	for _, k := range Keys() {
		if _, ok := specFor(k.Name); !ok || len(k.Env) == 0 {
			t.Errorf("bad key %+v", k)
		}
		if k.Secret != (k.Flag == "") {
			t.Errorf("%s: secrets have no flag, others do", k.Name)
		}
	}
	if FlagName(KeyLoRADir) != "--lora-dir" {
		t.Error(FlagName(KeyLoRADir))
	}
}
