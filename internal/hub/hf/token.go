package hf

import (
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/daydreamlive/scopectl/internal/secret"
)

// TokenFrom picks the token as huggingface_hub's get_token does: env (HF_TOKEN, as the
// caller read it) when set, else the file $HF_HOME/token (surrounding whitespace
// trimmed). hfHome "" means huggingface_hub's default, $XDG_CACHE_HOME/huggingface or
// ~/.cache/huggingface. A missing or unreadable file gives the unset Secret.
func TokenFrom(env secret.Secret, hfHome string) secret.Secret {
	if env.IsSet() {
		return env
	}
	if hfHome == "" {
		hfHome = DefaultHFHome()
	}
	if hfHome == "" {
		return secret.Secret{}
	}
	f, err := os.Open(filepath.Join(hfHome, "token"))
	if err != nil {
		return secret.Secret{}
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 64<<10))
	return secret.New(strings.TrimSpace(string(b)))
}

// DefaultHFHome is huggingface_hub's HF_HOME default (not reading HF_HOME itself):
// $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface.
func DefaultHFHome() string {
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" {
		return filepath.Join(x, "huggingface")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".cache", "huggingface")
}
