// Package config resolves scopectl's settings with visible precedence:
//
//	flags > environment > .env in the working directory > config file > defaults
//
// A .env file never overrides a variable that is set (non-empty) in the real
// environment, and the process environment is never modified. The config
// file is $XDG_CONFIG_HOME/scopectl/config.yaml (default
// ~/.config/scopectl/config.yaml), or $SCOPECTL_CONFIG, or Loader.ConfigFile.
//
// Every effective value is recorded in Config.Values with its source and
// origin (variable name, ".env:3", file path and line, flag), so the CLI can
// show where each setting came from. Credentials are secret.Secret values
// and appear in Values only in redacted form. Secrets cannot be set by
// flags: they would be visible in process listings.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"

	"github.com/daydreamlive/scopectl/internal/secret"
	"github.com/joho/godotenv"
	"gopkg.in/yaml.v3"
)

// Source says which layer a value came from.
type Source string

const (
	SourceFlag       Source = "flag"
	SourceEnv        Source = "env"
	SourceDotEnv     Source = "dotenv"
	SourceConfigFile Source = "config-file"
	SourceDefault    Source = "default"
)

// Value is one effective setting and where it came from.
type Value struct {
	Key    string `json:"key"`              // canonical key, e.g. "lora_dir"
	Value  string `json:"value"`            // for secrets: the redacted form only
	Source Source `json:"source"`           // flag, env, dotenv, config-file, default
	Origin string `json:"origin,omitempty"` // "DAYDREAM_SCOPE_LORA_DIR", ".env:3", "/home/u/.config/scopectl/config.yaml:2", "--lora-dir"
	Secret bool   `json:"secret"`
}

// Config is the resolved configuration.
type Config struct {
	LoRADir     string        // SCOPE_LORA_DIR, DAYDREAM_SCOPE_LORA_DIR, DAYDREAM_SCOPE_MODELS_DIR/lora; default ~/.daydream-scope/models/lora
	DataDir     string        // SCOPECTL_DATA_DIR; default $XDG_DATA_HOME/scopectl (~/.local/share/scopectl)
	HFHome      string        // HF_HOME; default $XDG_CACHE_HOME/huggingface (~/.cache/huggingface)
	HFHubCache  string        // HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE; default <HFHome>/hub
	HFEndpoint  string        // HF_ENDPOINT; default https://huggingface.co
	HFToken     secret.Secret // HF_TOKEN, HUGGING_FACE_HUB_TOKEN
	CivitAIKey  secret.Secret // CIVITAI_API_KEY, CIVITAI_TOKEN
	CivitAIURL  string        // CIVITAI_API_URL; default https://civitai.com
	RunPodKey   secret.Secret // RUNPOD_API_KEY
	CrocSecret  secret.Secret // CROC_SECRET
	AgentToken  secret.Secret // SCOPECTL_AGENT_TOKEN: bearer token of `scopectl agent`
	ServeToken  secret.Secret // SCOPECTL_SERVE_TOKEN: token of `scopectl serve`
	S3AccessKey secret.Secret // SCOPECTL_S3_ACCESS_KEY_ID, AWS_ACCESS_KEY_ID
	S3SecretKey secret.Secret // SCOPECTL_S3_SECRET_ACCESS_KEY, AWS_SECRET_ACCESS_KEY
	S3Endpoint  string        // SCOPECTL_S3_ENDPOINT, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL
	S3Region    string        // SCOPECTL_S3_REGION, AWS_REGION, AWS_DEFAULT_REGION
	Budget      string        // SCOPECTL_BUDGET_PER_DAY: "$20/day" or "20"; "" no budget

	Values   []Value  // every setting (set or not) with its source, in Keys() order
	Warnings []string // e.g. secrets in a file readable by group/others

	ConfigFile string // config file that was read; "" if none existed
	DotEnvFile string // .env file that was read; "" if none existed
}

// Loader resolves a Config. The zero value uses the real process
// environment, working directory and home directory.
type Loader struct {
	Env        func(string) (string, bool) // default os.LookupEnv
	WorkDir    string                      // where .env is looked for; default os.Getwd()
	ConfigFile string                      // override path; default $SCOPECTL_CONFIG, then XDG
	Home       string                      // default os.UserHomeDir()
	Flags      map[string]string           // canonical key -> value of a flag the user set
}

// Defaults.
const (
	DefaultHFEndpoint = "https://huggingface.co"
	DefaultCivitAIURL = "https://civitai.com"
	dotEnvName        = ".env"
)

type layerValue struct {
	value  string
	origin string
}

type loader struct {
	l       Loader
	env     func(string) (string, bool)
	home    string
	homeErr error

	dotenv     map[string]layerValue // env var name -> value
	dotenvPath string
	file       map[string]layerValue // canonical key -> value
	filePath   string

	warnings []string
}

// getenv returns a non-empty real environment variable. Empty variables
// count as unset throughout (shells and CI often export empty ones).
func (ld *loader) getenv(name string) (string, bool) {
	v, ok := ld.env(name)
	return v, ok && v != ""
}

func (ld *loader) homeDir() (string, error) {
	if ld.home == "" && ld.homeErr == nil {
		ld.homeErr = errors.New("config: cannot determine the home directory (set HOME)")
	}
	return ld.home, ld.homeErr
}

// Load resolves the configuration. Errors are single-line and never
// contain secret values.
func (l Loader) Load() (*Config, error) {
	ld := &loader{l: l, env: l.Env}
	if ld.env == nil {
		ld.env = os.LookupEnv
	}
	ld.home = l.Home
	if ld.home == "" {
		ld.home, ld.homeErr = os.UserHomeDir()
	}

	for k := range l.Flags {
		s, ok := specFor(k)
		if !ok {
			return nil, fmt.Errorf("config: unknown flag key %q", k)
		}
		if s.secret {
			return nil, fmt.Errorf("config: %s cannot be set by a flag (process arguments are visible to other users); use %s, .env or the config file", k, s.env[0].Name)
		}
	}

	if err := ld.loadDotEnv(); err != nil {
		return nil, err
	}
	if err := ld.loadConfigFile(); err != nil {
		return nil, err
	}

	cfg := &Config{ConfigFile: ld.filePath, DotEnvFile: ld.dotenvPath}
	resolved := map[string]string{}
	for i := range specs {
		s := &specs[i]
		v, src, origin, err := ld.resolve(s, resolved)
		if err != nil {
			return nil, err
		}
		resolved[s.name] = v
		val := Value{Key: s.name, Value: v, Source: src, Origin: origin, Secret: s.secret}
		if s.secret {
			sec := secret.New(v)
			val.Value = sec.Redacted()
			cfg.setSecret(s.name, sec)
		} else {
			cfg.setString(s.name, v)
			if s.kind == kindURL {
				val.Value = displayURL(v)
			}
		}
		cfg.Values = append(cfg.Values, val)
	}
	cfg.Warnings = ld.warnings
	return cfg, nil
}

// resolve finds the effective value of one key.
func (ld *loader) resolve(s *keySpec, resolved map[string]string) (v string, src Source, origin string, err error) {
	defer func() {
		if err == nil && v != "" {
			v, err = ld.normalize(s, v, src, origin)
		}
	}()
	if fv, ok := ld.l.Flags[s.name]; ok {
		return fv, SourceFlag, FlagName(s.name), nil
	}
	for _, e := range s.env {
		if ev, ok := ld.getenv(e.Name); ok {
			return joinSub(ev, e.Sub), SourceEnv, e.Name, nil
		}
	}
	for _, e := range s.env {
		if _, real := ld.getenv(e.Name); real {
			continue // never override the real environment
		}
		if dv, ok := ld.dotenv[e.Name]; ok && dv.value != "" {
			return joinSub(dv.value, e.Sub), SourceDotEnv, dv.origin, nil
		}
	}
	if fv, ok := ld.file[s.name]; ok {
		return fv.value, SourceConfigFile, fv.origin, nil
	}
	v, origin, err = ld.defaultFor(s.name, resolved)
	return v, SourceDefault, origin, err
}

func joinSub(v, sub string) string {
	if sub == "" {
		return v
	}
	return filepath.Join(v, sub) // a leading ~ is expanded later
}

func (ld *loader) normalize(s *keySpec, v string, src Source, origin string) (string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return "", nil
	}
	switch s.kind {
	case kindPath:
		if v == "~" || strings.HasPrefix(v, "~/") || strings.HasPrefix(v, "~"+string(filepath.Separator)) {
			home, err := ld.homeDir()
			if err != nil {
				return "", err
			}
			v = expandTilde(v, home)
		}
		return filepath.Clean(v), nil
	case kindURL:
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			// The value is not echoed: URLs can carry credentials.
			return "", fmt.Errorf("config: %s (from %s %s) must be an http(s) URL", s.name, src, origin)
		}
		return strings.TrimRight(v, "/"), nil
	}
	return v, nil
}

// displayURL hides any user info of a URL, which may be a credential
// (https://user:pass@proxy or https://TOKEN@host -> https://xxxxx@proxy).
func displayURL(v string) string {
	u, err := url.Parse(v)
	if err != nil || u.User == nil {
		return v
	}
	u.User = url.User("xxxxx")
	return u.String()
}

// expandTilde replaces a leading "~" or "~/" with home (no-op if home is "").
func expandTilde(p, home string) string {
	if home == "" {
		return p
	}
	if p == "~" {
		return home
	}
	if strings.HasPrefix(p, "~/") || strings.HasPrefix(p, "~"+string(filepath.Separator)) {
		return filepath.Join(home, p[2:])
	}
	return p
}

// xdg returns an XDG base directory from the real environment if it is
// set to an absolute path (the spec says to ignore relative ones), else
// ~/<fallback>.
func (ld *loader) xdg(name, fallback string) (dir, origin string, err error) {
	if v, ok := ld.getenv(name); ok && filepath.IsAbs(v) {
		return v, name, nil
	}
	home, err := ld.homeDir()
	if err != nil {
		return "", "", err
	}
	return filepath.Join(home, fallback), "", nil
}

func (ld *loader) defaultFor(key string, resolved map[string]string) (v, origin string, err error) {
	switch key {
	case KeyLoRADir:
		home, err := ld.homeDir()
		if err != nil {
			return "", "", err
		}
		return filepath.Join(home, ".daydream-scope", "models", "lora"), "", nil
	case KeyDataDir:
		base, origin, err := ld.xdg("XDG_DATA_HOME", filepath.Join(".local", "share"))
		return filepath.Join(base, "scopectl"), origin, err
	case KeyHFHome:
		base, origin, err := ld.xdg("XDG_CACHE_HOME", ".cache")
		return filepath.Join(base, "huggingface"), origin, err
	case KeyHFHubCache:
		return filepath.Join(resolved[KeyHFHome], "hub"), KeyHFHome, nil
	case KeyHFEndpoint:
		return DefaultHFEndpoint, "", nil
	case KeyCivitAIURL:
		return DefaultCivitAIURL, "", nil
	}
	return "", "", nil
}

// ConfigPath returns the config file path Load would read (it may not
// exist): Loader.ConfigFile, else $SCOPECTL_CONFIG, else
// $XDG_CONFIG_HOME/scopectl/config.yaml, else ~/.config/scopectl/config.yaml.
// explicit reports whether the path was chosen by the user (then a missing
// file is an error).
func (l Loader) ConfigPath() (path string, explicit bool, err error) {
	ld := &loader{l: l, env: l.Env, home: l.Home}
	if ld.env == nil {
		ld.env = os.LookupEnv
	}
	if ld.home == "" {
		ld.home, ld.homeErr = os.UserHomeDir()
	}
	return ld.configPath()
}

func (ld *loader) configPath() (string, bool, error) {
	p := ld.l.ConfigFile
	if p == "" {
		p, _ = ld.getenv("SCOPECTL_CONFIG")
	}
	if p != "" {
		if strings.HasPrefix(p, "~") {
			home, err := ld.homeDir()
			if err != nil {
				return "", true, err
			}
			p = expandTilde(p, home)
		}
		return p, true, nil
	}
	base, _, err := ld.xdg("XDG_CONFIG_HOME", ".config")
	if err != nil {
		return "", false, err
	}
	return filepath.Join(base, "scopectl", "config.yaml"), false, nil
}

// checkPerms warns when a file holding secrets is accessible to group or
// others.
func (ld *loader) checkPerms(path, display string, fi fs.FileInfo, secretKeys []string) {
	if len(secretKeys) == 0 || runtime.GOOS == "windows" {
		return
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		ld.warnings = append(ld.warnings, fmt.Sprintf(
			"%s holds secrets (%s) but has mode %04o; run: chmod 600 %s",
			display, strings.Join(secretKeys, ", "), perm, path))
	}
}

// ---- .env ----

var dotenvKeyLine = regexp.MustCompile(`^\s*(?:export\s+)?([A-Za-z0-9_.]+)\s*[=:]`)

func (ld *loader) loadDotEnv() error {
	wd := ld.l.WorkDir
	if wd == "" {
		var err error
		if wd, err = os.Getwd(); err != nil {
			return nil // no working directory, no .env
		}
	}
	path := filepath.Join(wd, dotEnvName)
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config: %s: %v", path, pathErr(err))
	}
	if fi.IsDir() {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %s: %v", path, pathErr(err))
	}
	m, err := godotenv.UnmarshalBytes(data)
	if err != nil {
		// godotenv's messages quote the rest of the file, which may hold
		// secrets: report only the line.
		if line := dotenvErrorLine(data); line > 0 {
			return fmt.Errorf("config: %s:%d: malformed .env file", path, line)
		}
		return fmt.Errorf("config: %s: malformed .env file", path)
	}
	lines := map[string]int{}
	for i, l := range strings.Split(string(data), "\n") {
		if sm := dotenvKeyLine.FindStringSubmatch(l); sm != nil {
			lines[sm[1]] = i + 1
		}
	}
	ld.dotenv = map[string]layerValue{}
	ld.dotenvPath = path
	var secretKeys []string
	for k, v := range m {
		origin := dotEnvName
		if n := lines[k]; n > 0 {
			origin = fmt.Sprintf("%s:%d", dotEnvName, n)
		}
		ld.dotenv[k] = layerValue{value: v, origin: origin}
		if v != "" && isSecretEnv(k) {
			secretKeys = append(secretKeys, k)
		}
	}
	slices.Sort(secretKeys)
	ld.checkPerms(path, path, fi, secretKeys)
	return nil
}

// dotenvErrorLine finds the first line at which the file stops parsing:
// one past the longest prefix of whole lines that parses.
func dotenvErrorLine(data []byte) int {
	lines := bytes.SplitAfter(data, []byte("\n"))
	if len(lines) > 5000 {
		return 0
	}
	good := 0
	var prefix []byte
	for i, l := range lines {
		prefix = append(prefix, l...)
		if _, err := godotenv.UnmarshalBytes(prefix); err == nil {
			good = i + 1
		}
	}
	if good >= len(lines) {
		return 0
	}
	return good + 1
}

func isSecretEnv(name string) bool {
	for _, s := range specs {
		if !s.secret {
			continue
		}
		for _, e := range s.env {
			if e.Name == name {
				return true
			}
		}
	}
	return false
}

// ---- config.yaml ----

func (ld *loader) loadConfigFile() error {
	path, explicit, err := ld.configPath()
	if err != nil {
		if errors.Is(err, ld.homeErr) {
			return nil // no home, no default config file
		}
		return err
	}
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config: %s: %v", path, pathErr(err))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %s: %v", path, pathErr(err))
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("config: %s: %s", path, yamlErrMsg(err))
	}
	ld.file = map[string]layerValue{}
	ld.filePath = path
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil // empty file
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return nil // only comments / "~"
	}
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("config: %s:%d: expected a mapping of key: value", path, root.Line)
	}
	var secretKeys []string
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return fmt.Errorf("config: %s:%d: keys must be plain names", path, k.Line)
		}
		s, ok := specFor(k.Value)
		if !ok {
			if !keyName.MatchString(k.Value) {
				return fmt.Errorf("config: %s:%d: unknown key (not repeated: it does not look like a setting name and may be a secret)", path, k.Line)
			}
			hint := ""
			if sug := suggest(k.Value); sug != "" {
				hint = fmt.Sprintf(" (did you mean %q?)", sug)
			}
			return fmt.Errorf("config: %s:%d: unknown key %q%s", path, k.Line, k.Value, hint)
		}
		if _, dup := ld.file[k.Value]; dup {
			return fmt.Errorf("config: %s:%d: duplicate key %q", path, k.Line, k.Value)
		}
		if v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		if v.Kind != yaml.ScalarNode {
			return fmt.Errorf("config: %s:%d: %s must be a single value", path, v.Line, k.Value)
		}
		if v.ShortTag() == "!!null" {
			continue
		}
		ld.file[k.Value] = layerValue{value: v.Value, origin: fmt.Sprintf("%s:%d", path, k.Line)}
		if s.secret && v.Value != "" {
			secretKeys = append(secretKeys, k.Value)
		}
	}
	ld.checkPerms(path, path, fi, secretKeys)
	return nil
}

// keyName is what a setting name, or a typo of one, looks like: short words
// of letters and digits joined by "_", "." or "-". Other unknown keys, such
// as a token pasted where a key belongs, are not repeated in errors.
var keyName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]{0,15}(?:[_.-][A-Za-z0-9]{1,15})*$`)

// yamlAnchorRef matches yaml.v3's "unknown anchor 'NAME' referenced", whose
// NAME is text of the file: any value that starts with "*", such as a
// password, so it must not be repeated.
var yamlAnchorRef = regexp.MustCompile(`unknown anchor '.*' referenced`)

// yamlErrMsg is a YAML parse error on one line, without text of the file.
func yamlErrMsg(err error) string {
	msg := oneLine(strings.TrimPrefix(err.Error(), "yaml: "))
	return yamlAnchorRef.ReplaceAllLiteralString(msg, "a value starting with * refers to an anchor that does not exist (quote values that start with *)")
}

// pathErr strips the path from an *fs.PathError (the caller names the file).
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// ---- Config accessors ----

func (c *Config) setString(key, v string) {
	switch key {
	case KeyLoRADir:
		c.LoRADir = v
	case KeyDataDir:
		c.DataDir = v
	case KeyHFHome:
		c.HFHome = v
	case KeyHFHubCache:
		c.HFHubCache = v
	case KeyHFEndpoint:
		c.HFEndpoint = v
	case KeyCivitAIURL:
		c.CivitAIURL = v
	case KeyS3Endpoint:
		c.S3Endpoint = v
	case KeyS3Region:
		c.S3Region = v
	case KeyBudget:
		c.Budget = v
	}
}

func (c *Config) setSecret(key string, s secret.Secret) {
	switch key {
	case KeyHFToken:
		c.HFToken = s
	case KeyCivitAIKey:
		c.CivitAIKey = s
	case KeyRunPodKey:
		c.RunPodKey = s
	case KeyCrocSecret:
		c.CrocSecret = s
	case KeyS3AccessKey:
		c.S3AccessKey = s
	case KeyS3SecretKey:
		c.S3SecretKey = s
	case KeyAgentToken:
		c.AgentToken = s
	case KeyServeToken:
		c.ServeToken = s
	}
}

// Secret returns the secret of a canonical key (unset when the key has none).
func (c *Config) Secret(key string) secret.Secret {
	switch key {
	case KeyHFToken:
		return c.HFToken
	case KeyCivitAIKey:
		return c.CivitAIKey
	case KeyRunPodKey:
		return c.RunPodKey
	case KeyCrocSecret:
		return c.CrocSecret
	case KeyS3AccessKey:
		return c.S3AccessKey
	case KeyS3SecretKey:
		return c.S3SecretKey
	case KeyAgentToken:
		return c.AgentToken
	case KeyServeToken:
		return c.ServeToken
	}
	return secret.Secret{}
}

// Lookup returns the effective value of a canonical key.
func (c *Config) Lookup(key string) (Value, bool) {
	for _, v := range c.Values {
		if v.Key == key {
			return v, true
		}
	}
	return Value{}, false
}

// Secrets returns every secret that is set, for registering in
// secret.Default (for _, s := range cfg.Secrets() { secret.Default.Add(s) }).
func (c *Config) Secrets() []secret.Secret {
	var out []secret.Secret
	for _, s := range []secret.Secret{c.HFToken, c.CivitAIKey, c.RunPodKey, c.CrocSecret, c.S3AccessKey, c.S3SecretKey, c.AgentToken, c.ServeToken} {
		if s.IsSet() {
			out = append(out, s)
		}
	}
	return out
}
