package config

import "strings"

// Canonical configuration keys (config.yaml keys, Flags map keys,
// Value.Key).
const (
	KeyLoRADir     = "lora_dir"
	KeyDataDir     = "data_dir"
	KeyHFHome      = "hf_home"
	KeyHFHubCache  = "hf_hub_cache"
	KeyHFEndpoint  = "hf_endpoint"
	KeyHFToken     = "hf_token"
	KeyCivitAIURL  = "civitai_url"
	KeyCivitAIKey  = "civitai_api_key"
	KeyRunPodKey   = "runpod_api_key"
	KeyCrocSecret  = "croc_secret"
	KeyS3Endpoint  = "s3_endpoint"
	KeyS3Region    = "s3_region"
	KeyS3AccessKey = "s3_access_key_id"
	KeyS3SecretKey = "s3_secret_access_key"
	KeyAgentToken  = "agent_token"
	KeyServeToken  = "serve_token"
	KeyBudget      = "budget_per_day" // "$20/day" or "20": pod create / deploy --new / train run warn past it
)

type kind int

const (
	kindString kind = iota
	kindPath        // "~" is expanded
	kindURL         // must be http(s); trailing "/" trimmed
)

// envName is one environment variable that can set a key. If Sub is set,
// the key's value is filepath.Join(value, Sub) (DAYDREAM_SCOPE_MODELS_DIR
// -> <models>/lora).
type envName struct {
	Name string
	Sub  string
}

type keySpec struct {
	name   string
	env    []envName
	secret bool
	kind   kind
	desc   string
}

// specs is the single table of settings, in the stable order used for
// Config.Values. Defaults are computed in defaultFor.
var specs = []keySpec{
	{name: KeyLoRADir, kind: kindPath, env: []envName{{Name: "SCOPE_LORA_DIR"}, {Name: "DAYDREAM_SCOPE_LORA_DIR"}, {Name: "DAYDREAM_SCOPE_MODELS_DIR", Sub: "lora"}},
		desc: "directory Daydream Scope loads LoRAs from"},
	{name: KeyDataDir, kind: kindPath, env: []envName{{Name: "SCOPECTL_DATA_DIR"}},
		desc: "scopectl database and library blobs"},
	{name: KeyHFHome, kind: kindPath, env: []envName{{Name: "HF_HOME"}},
		desc: "Hugging Face home directory"},
	{name: KeyHFHubCache, kind: kindPath, env: []envName{{Name: "HF_HUB_CACHE"}, {Name: "HUGGINGFACE_HUB_CACHE"}},
		desc: "Hugging Face hub cache"},
	{name: KeyHFEndpoint, kind: kindURL, env: []envName{{Name: "HF_ENDPOINT"}},
		desc: "Hugging Face endpoint"},
	{name: KeyHFToken, secret: true, env: []envName{{Name: "HF_TOKEN"}, {Name: "HUGGING_FACE_HUB_TOKEN"}},
		desc: "Hugging Face access token"},
	{name: KeyCivitAIURL, kind: kindURL, env: []envName{{Name: "CIVITAI_API_URL"}},
		desc: "CivitAI base URL"},
	{name: KeyCivitAIKey, secret: true, env: []envName{{Name: "CIVITAI_API_KEY"}, {Name: "CIVITAI_TOKEN"}},
		desc: "CivitAI API key"},
	{name: KeyRunPodKey, secret: true, env: []envName{{Name: "RUNPOD_API_KEY"}},
		desc: "RunPod API key"},
	{name: KeyCrocSecret, secret: true, env: []envName{{Name: "CROC_SECRET"}},
		desc: "croc code phrase for pod transfers"},
	{name: KeyS3Endpoint, kind: kindURL, env: []envName{{Name: "SCOPECTL_S3_ENDPOINT"}, {Name: "AWS_ENDPOINT_URL_S3"}, {Name: "AWS_ENDPOINT_URL"}},
		desc: "S3-compatible endpoint URL"},
	{name: KeyBudget, env: []envName{{Name: "SCOPECTL_BUDGET_PER_DAY"}},
		desc: "daily spend ($/day) past which new pods are warned about (refused with --strict)"},
	{name: KeyS3Region, env: []envName{{Name: "SCOPECTL_S3_REGION"}, {Name: "AWS_REGION"}, {Name: "AWS_DEFAULT_REGION"}},
		desc: "S3 region"},
	{name: KeyS3AccessKey, secret: true, env: []envName{{Name: "SCOPECTL_S3_ACCESS_KEY_ID"}, {Name: "AWS_ACCESS_KEY_ID"}},
		desc: "S3 access key id"},
	{name: KeyS3SecretKey, secret: true, env: []envName{{Name: "SCOPECTL_S3_SECRET_ACCESS_KEY"}, {Name: "AWS_SECRET_ACCESS_KEY"}},
		desc: "S3 secret access key"},
	{name: KeyAgentToken, secret: true, env: []envName{{Name: "SCOPECTL_AGENT_TOKEN"}},
		desc: "bearer token of scopectl agent (the pod-side receiver)"},
	{name: KeyServeToken, secret: true, env: []envName{{Name: "SCOPECTL_SERVE_TOKEN"}},
		desc: "token of scopectl serve (default: generated into the data dir's serve-token file)"},
}

func specFor(name string) (*keySpec, bool) {
	for i := range specs {
		if specs[i].name == name {
			return &specs[i], true
		}
	}
	return nil, false
}

// Key describes one setting, for help text and `scopectl config` output.
type Key struct {
	Name        string   `json:"key"`
	Env         []string `json:"env"`            // variables, highest priority first
	Flag        string   `json:"flag,omitempty"` // "--lora-dir"; "" for secrets (never flags)
	Secret      bool     `json:"secret"`
	Description string   `json:"description"`
}

// Keys lists every setting in the stable order used by Config.Values.
func Keys() []Key {
	out := make([]Key, 0, len(specs))
	for _, s := range specs {
		k := Key{Name: s.name, Secret: s.secret, Description: s.desc}
		if !s.secret {
			k.Flag = FlagName(s.name)
		}
		for _, e := range s.env {
			k.Env = append(k.Env, e.Name)
		}
		out = append(out, k)
	}
	return out
}

// FlagName returns the conventional flag for a canonical key:
// "lora_dir" -> "--lora-dir".
func FlagName(key string) string {
	return "--" + strings.ReplaceAll(key, "_", "-")
}

// suggest maps a mistaken config-file key (an env var name, dashes, wrong
// case) to a canonical key, or "".
func suggest(k string) string {
	norm := strings.ToLower(strings.ReplaceAll(k, "-", "_"))
	for _, s := range specs {
		if s.name == norm {
			return s.name
		}
		for _, e := range s.env {
			if strings.EqualFold(e.Name, k) {
				return s.name
			}
		}
	}
	return ""
}
