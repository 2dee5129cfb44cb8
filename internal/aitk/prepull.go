package aitk

import (
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// PullItem is one Hugging Face Hub download a job needs before ai-toolkit starts: the
// base model (model.name_or_path), and the other hub models the config names.
type PullItem struct {
	Repo     string `json:"repo"`               // ORG/NAME
	Revision string `json:"revision,omitempty"` // default main
	// Files are exact paths in the repo; empty means the files diffusers'
	// from_pretrained loads (SelectPretrainedFiles over the repo's listing).
	Files []string `json:"files,omitempty"`
	Field string   `json:"field"` // the config field that names it, for messages
}

var hubIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$`)

// weightExt are file extensions that make "a/b.ext" a local file, not a repo.
var localExt = []string{".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".yaml", ".yml", ".json"}

// HubRepoID reports whether s names a Hub repository the way from_pretrained reads it
// (ORG/NAME), rather than a local path or a URL. A relative local folder of two
// segments looks the same: the caller checks the file system as well.
func HubRepoID(s string) (string, bool) {
	if !hubIDRe.MatchString(s) || strings.Contains(s, "--") || strings.Contains(s, "..") {
		return "", false
	}
	if strings.HasSuffix(s, ".git") || strings.HasSuffix(s, "-") || strings.HasSuffix(s, ".") {
		return "", false
	}
	lower := strings.ToLower(s)
	for _, e := range localExt {
		if strings.HasSuffix(lower, e) {
			return "", false
		}
	}
	org, _, _ := strings.Cut(s, "/")
	if org == "." || org == "~" {
		return "", false
	}
	return s, true
}

// HubFileRef reads "ORG/NAME/FILE" (ai-toolkit's form for an accuracy recovery adapter
// or an assistant LoRA on the Hub): the repo and the file in it.
func HubFileRef(s string) (repo, file string, ok bool) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 || parts[2] == "" || strings.HasPrefix(parts[2], ".") {
		return "", "", false
	}
	repo, ok = HubRepoID(parts[0] + "/" + parts[1])
	return repo, parts[2], ok
}

// PrepullPlan lists the Hub downloads cfg needs: every process's model.name_or_path,
// model.extras_name_or_path when it differs, the VAE repo wan22_14b loads
// (ai-toolkit/wan2.1-vae), an accuracy recovery adapter in model.qtype ("qtype|ORG/NAME/FILE")
// and model.assistant_lora_path. Local paths and URLs are left to the trainer.
func PrepullPlan(cfg *Config) []PullItem {
	var out []PullItem
	seen := map[string]bool{}
	add := func(it PullItem) {
		k := it.Repo + "\x00" + strings.Join(it.Files, "\x00")
		if seen[k] || seen[it.Repo+"\x00"] {
			return
		}
		seen[k] = true
		out = append(out, it)
	}
	repoOrFile := func(v, field string) {
		if r, ok := HubRepoID(v); ok {
			add(PullItem{Repo: r, Field: field})
		} else if r, f, ok := HubFileRef(v); ok {
			add(PullItem{Repo: r, Files: []string{f}, Field: field})
		}
	}
	if cfg == nil {
		return nil
	}
	for i, p := range cfg.Config.Process {
		m := p.Model
		if m == nil {
			continue
		}
		pre := "config.process[" + strconv.Itoa(i) + "].model."
		if r, ok := HubRepoID(m.NameOrPath); ok {
			add(PullItem{Repo: r, Field: pre + "name_or_path"})
		}
		if v, ok := m.Extra["extras_name_or_path"].(string); ok {
			if r, ok := HubRepoID(v); ok {
				add(PullItem{Repo: r, Field: pre + "extras_name_or_path"})
			}
		}
		if strings.HasPrefix(ArchName(m.Arch), "wan22_14b") {
			add(PullItem{Repo: "ai-toolkit/wan2.1-vae", Field: pre + "arch (" + ArchName(m.Arch) + " loads its VAE from the Hub)"})
		}
		if _, ara, ok := strings.Cut(m.QType, "|"); ok {
			if r, f, ok := HubFileRef(ara); ok {
				add(PullItem{Repo: r, Files: []string{f}, Field: pre + "qtype"})
			}
		}
		if v, ok := m.Extra["assistant_lora_path"].(string); ok {
			repoOrFile(v, pre+"assistant_lora_path")
		}
	}
	return out
}

// ArchName is model.arch without its ":variant" (ModelConfig drops it).
func ArchName(arch string) string {
	a, _, _ := strings.Cut(arch, ":")
	return a
}

// SelectPretrainedFiles picks, from a repo's file listing, what diffusers'
// from_pretrained (and transformers' for the text encoder) loads: configs, tokenizer and
// scheduler files, and the weights, as .safetensors (with their .index.json) where a
// folder has them, else as PyTorch .bin; never the .bin/.pt/.msgpack/.onnx/.h5
// duplicates, fp16-style variants next to the plain weights, images, videos or docs. In a
// Diffusers repo (model_index.json at the top) only the top-level config files and the
// component folders count. The result is sorted.
func SelectPretrainedFiles(paths []string) []string {
	diffusers := false
	for _, p := range paths {
		if p == "model_index.json" {
			diffusers = true
		}
	}
	safe := map[string]bool{}  // folder has .safetensors
	plain := map[string]bool{} // folder has non-variant .safetensors
	for _, p := range paths {
		if strings.HasSuffix(p, ".safetensors") {
			d := path.Dir(p)
			safe[d] = true
			if !isVariant(path.Base(p)) {
				plain[d] = true
			}
		}
	}
	var out []string
	seen := map[string]bool{}
	for _, p := range paths {
		if p == "" || seen[p] || strings.HasPrefix(p, "/") {
			continue
		}
		dir, base := path.Dir(p), path.Base(p)
		if strings.HasPrefix(base, ".") || docName(base) {
			continue
		}
		if diffusers && dir == "." && base != "model_index.json" && base != "config.json" && base != "scheduler_config.json" {
			continue
		}
		keep := false
		switch ext := path.Ext(base); {
		case ext == ".safetensors":
			keep = !plain[dir] || !isVariant(base)
		case strings.HasSuffix(base, ".safetensors.index.json"):
			keep = true
		case strings.Contains(base, ".safetensors.index.") && ext == ".json": // a variant's index
			keep = !plain[dir]
		case strings.HasSuffix(base, ".bin.index.json"):
			keep = !safe[dir]
		case strings.Contains(base, ".bin.index.") && ext == ".json":
			keep = false
		case ext == ".bin":
			keep = !safe[dir] && !isVariant(base) && weightBin(base)
		case ext == ".json", ext == ".txt", ext == ".model", ext == ".tiktoken", ext == ".vocab":
			keep = true
		}
		if keep {
			seen[p] = true
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

var shardRe = regexp.MustCompile(`-[0-9]{5}-of-[0-9]{5}$`)

// isVariant reports a weight file named NAME.VARIANT.ext (diffusers' variants:
// diffusion_pytorch_model.fp16.safetensors, …fp16-00001-of-00002.safetensors).
func isVariant(base string) bool {
	stem := strings.TrimSuffix(base, path.Ext(base))
	stem = shardRe.ReplaceAllString(stem, "")
	return strings.Contains(stem, ".")
}

// weightBin: the PyTorch weights diffusers/transformers load (not optimizer or training
// state that some repos carry).
func weightBin(base string) bool {
	return strings.HasPrefix(base, "diffusion_pytorch_model") || strings.HasPrefix(base, "pytorch_model") ||
		strings.HasPrefix(base, "pytorch_lora_weights") || strings.HasPrefix(base, "adapter_model")
}

func docName(base string) bool {
	u := strings.ToUpper(base)
	for _, p := range []string{"README", "LICENSE", "NOTICE", "LICENCE", "CHANGELOG"} {
		if strings.HasPrefix(u, p) {
			return true
		}
	}
	return false
}
