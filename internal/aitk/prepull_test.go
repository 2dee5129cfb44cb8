package aitk

import (
	"path"
	"reflect"
	"strings"
	"testing"
)

func TestHubRepoID(t *testing.T) {
	for s, want := range map[string]bool{
		"Wan-AI/Wan2.1-T2V-14B-Diffusers":           true,
		"ai-toolkit/Wan2.2-T2V-A14B-Diffusers-bf16": true,
		"/workspace/models/wan":                     false,
		"./models/wan":                              false,
		"../wan/x":                                  false,
		"models/wan.safetensors":                    false,
		"https://huggingface.co/Wan-AI/Wan2.1":      false,
		"a/b/c":                                     false,
		"a--b/c":                                    false,
		"a/b.git":                                   false,
		"wan":                                       false,
		"":                                          false,
		"~/wan":                                     false,
	} {
		if _, ok := HubRepoID(s); ok != want {
			t.Errorf("HubRepoID(%q) = %v, want %v", s, ok, want)
		}
	}
	if r, f, ok := HubFileRef("ostris/accuracy_recovery_adapters/wan22_14b_t2i_torchao_uint4.safetensors"); !ok || r != "ostris/accuracy_recovery_adapters" || f != "wan22_14b_t2i_torchao_uint4.safetensors" {
		t.Errorf("HubFileRef: %q %q %v", r, f, ok)
	}
}

// A Wan2.1 Diffusers repo as it is on the Hub, with the duplicates diffusers skips.
var wanListing = []string{
	".gitattributes", "README.md", "LICENSE.txt", "assets/comp_effic.png", "examples/i2v_input.JPG",
	"model_index.json",
	"scheduler/scheduler_config.json",
	"text_encoder/config.json", "text_encoder/model-00001-of-00005.safetensors", "text_encoder/model-00002-of-00005.safetensors",
	"text_encoder/model.safetensors.index.json", "text_encoder/pytorch_model.bin.index.json", "text_encoder/pytorch_model-00001-of-00002.bin",
	"tokenizer/special_tokens_map.json", "tokenizer/spiece.model", "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json",
	"transformer/config.json", "transformer/diffusion_pytorch_model-00001-of-00012.safetensors",
	"transformer/diffusion_pytorch_model.safetensors.index.json",
	"transformer/diffusion_pytorch_model.fp16-00001-of-00006.safetensors",
	"transformer/diffusion_pytorch_model.safetensors.index.fp16.json",
	"vae/config.json", "vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.bin",
	"vae/diffusion_flax_model.msgpack", "vae/model.onnx", "vae/tf_model.h5",
	"Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth", "diffusion_pytorch_model.safetensors",
}

func TestSelectPretrainedFiles(t *testing.T) {
	got := SelectPretrainedFiles(wanListing)
	want := []string{
		"model_index.json",
		"scheduler/scheduler_config.json",
		"text_encoder/config.json", "text_encoder/model-00001-of-00005.safetensors", "text_encoder/model-00002-of-00005.safetensors",
		"text_encoder/model.safetensors.index.json",
		"tokenizer/special_tokens_map.json", "tokenizer/spiece.model", "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json",
		"transformer/config.json", "transformer/diffusion_pytorch_model-00001-of-00012.safetensors",
		"transformer/diffusion_pytorch_model.safetensors.index.json",
		"vae/config.json", "vae/diffusion_pytorch_model.safetensors",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// A plain model repo (no model_index.json): top-level weights count; .bin only
	// where no safetensors exist.
	got = SelectPretrainedFiles([]string{"config.json", "diffusion_pytorch_model.safetensors", "README.md", "sample.png"})
	if want := []string{"config.json", "diffusion_pytorch_model.safetensors"}; !reflect.DeepEqual(got, want) {
		t.Errorf("vae repo: %v", got)
	}
	got = SelectPretrainedFiles([]string{"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.bin", "unet/optimizer.bin"})
	if want := []string{"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.bin"}; !reflect.DeepEqual(got, want) {
		t.Errorf("bin-only repo: %v", got)
	}
}

func TestPrepullPlan(t *testing.T) {
	cfg, err := Parse([]byte(`job: extension
config:
  name: x
  process:
    - type: diffusion_trainer
      model:
        arch: "wan22_14b:t2v"
        name_or_path: ai-toolkit/Wan2.2-T2V-A14B-Diffusers-bf16
        qtype: "uint4|ostris/accuracy_recovery_adapters/wan22_14b_t2i_torchao_uint4.safetensors"
        assistant_lora_path: /workspace/lora.safetensors
`), YAML, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := PrepullPlan(cfg)
	var repos []string
	for _, it := range got {
		repos = append(repos, it.Repo+"|"+strings.Join(it.Files, ","))
	}
	want := []string{"ai-toolkit/Wan2.2-T2V-A14B-Diffusers-bf16|", "ai-toolkit/wan2.1-vae|",
		"ostris/accuracy_recovery_adapters|wan22_14b_t2i_torchao_uint4.safetensors"}
	if !reflect.DeepEqual(repos, want) {
		t.Errorf("plan %v, want %v", repos, want)
	}
	cfg.Config.Process[0].Model.NameOrPath = "/workspace/models/wan"
	cfg.Config.Process[0].Model.Arch, cfg.Config.Process[0].Model.QType = "wan21", ""
	if got := PrepullPlan(cfg); len(got) != 0 {
		t.Errorf("local model: plan %v", got)
	}
}

func FuzzSelectPretrainedFiles(f *testing.F) {
	f.Add(strings.Join(wanListing, "\n"))
	f.Add("model_index.json\nunet/diffusion_pytorch_model.bin")
	f.Add("a.safetensors\na.bin\n/abs.json\n\n")
	f.Fuzz(func(t *testing.T, s string) {
		in := strings.Split(s, "\n")
		got := SelectPretrainedFiles(in)
		have := map[string]bool{}
		for _, p := range in {
			have[p] = true
		}
		safe := map[string]bool{}
		for _, p := range got {
			if strings.HasSuffix(p, ".safetensors") {
				safe[path.Dir(p)] = true
			}
		}
		seen := map[string]bool{}
		for _, p := range got {
			if !have[p] || seen[p] {
				t.Fatalf("%q: not in the input or twice", p)
			}
			seen[p] = true
			if strings.HasSuffix(p, ".bin") && safe[path.Dir(p)] {
				t.Fatalf("%q: .bin next to safetensors", p)
			}
			for _, e := range []string{".msgpack", ".onnx", ".h5", ".pt", ".pth", ".png"} {
				if strings.HasSuffix(p, e) {
					t.Fatalf("%q selected", p)
				}
			}
		}
	})
}

func FuzzHubRepoID(f *testing.F) {
	for _, s := range []string{"Wan-AI/Wan2.1-T2V-14B-Diffusers", "./x/y", "a/b/c.safetensors", "a--b/c", "hf://a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, ok := HubRepoID(s)
		if ok && (r != s || strings.Count(s, "/") != 1 || strings.HasPrefix(s, "/") || strings.Contains(s, "..")) {
			t.Fatalf("HubRepoID(%q) = %q", s, r)
		}
		PrepullPlan(nil)
		HubFileRef(s)
	})
}
