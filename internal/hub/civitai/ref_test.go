package civitai

import (
	"errors"
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/lora"
)

func TestParseRef(t *testing.T) {
	ok := []struct {
		in   string
		want Ref
	}{
		{"civitai:2001", Ref{VersionID: 2001}},
		{"  civitai:2001 ", Ref{VersionID: 2001}},
		{"CIVITAI:2001", Ref{VersionID: 2001}},
		{"civitai:model/1001", Ref{ModelID: 1001}},
		{"civitai:model/1001@2000", Ref{ModelID: 1001, VersionID: 2000}},
		{"https://civitai.com/models/1001", Ref{ModelID: 1001}},
		{"https://civitai.com/models/1001/", Ref{ModelID: 1001}},
		{"https://civitai.com/models/1001/wan-small-anime-style", Ref{ModelID: 1001}},
		{"https://civitai.com/models/1001/wan-small-anime-style?modelVersionId=2000", Ref{ModelID: 1001, VersionID: 2000}},
		{"https://civitai.com/models/1001?modelVersionId=2000", Ref{ModelID: 1001, VersionID: 2000}},
		{"https://www.civitai.com/models/1001?modelVersionId=2000#images", Ref{ModelID: 1001, VersionID: 2000}},
		{"https://civitai.green/models/1001?modelVersionId=2000", Ref{ModelID: 1001, VersionID: 2000}},
		{"civitai.com/models/1001?modelVersionId=2000", Ref{ModelID: 1001, VersionID: 2000}},
		{"http://civitai.com/models/1001", Ref{ModelID: 1001}},
		{"https://civitai.com/model-versions/2000", Ref{VersionID: 2000}},
		{"https://civitai.com/api/download/models/2000", Ref{VersionID: 2000}},
		{"https://civitai.com/api/download/models/2000?type=Model&format=SafeTensor", Ref{VersionID: 2000}},
		{"urn:air:wanvideo:lora:civitai:1001@2000", Ref{ModelID: 1001, VersionID: 2000}},
		{"URN:AIR:wanvideo:lora:civitai:1001@2000", Ref{ModelID: 1001, VersionID: 2000}},
		{"urn:air:wanvideo:lora:civitai:1001", Ref{ModelID: 1001}},
		{"urn:air:wanvideo-14b:lora:civitai:1001@2000+3008", Ref{ModelID: 1001, VersionID: 2000, FileID: 3008}},
		{"urn:air:wanvideo:lora:civitai:1001@2000.safetensor", Ref{ModelID: 1001, VersionID: 2000}},
		{"urn:air:wanvideo:lora:civitai:1001@2000+3008.safetensor", Ref{ModelID: 1001, VersionID: 2000, FileID: 3008}},
		{"air:wanvideo:lora:civitai:1001@2000", Ref{ModelID: 1001, VersionID: 2000}},
		{"wanvideo:lora:civitai:1001@2000", Ref{ModelID: 1001, VersionID: 2000}},
		{"urn:air:wan2.1:lora:civitai:1001@2000", Ref{ModelID: 1001, VersionID: 2000}},
	}
	for _, c := range ok {
		got, err := ParseRef(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	bad := []string{
		"", "civitai:", "civitai:0", "civitai:-1", "civitai:abc", "civitai:12x", "civitai:model/", "civitai:model/x",
		"civitai:model/1@", "civitai:model/1@y", "civitai:1234567890123456789", "civitai:+5",
		"https://example.com/models/1001", "https://civitai.com.evil.com/models/1001", "https://user:pw@civitai.com/models/1",
		"https://civitai.com/models/abc", "https://civitai.com/models/1001?modelVersionId=x",
		"https://civitai.com/models/1001?modelVersionId=1&modelVersionId=2", "https://civitai.com/images/5",
		"https://civitai.com:8443/models/1", "https://civitai.com/models/1/slug/extra",
		"urn:air:wanvideo:lora:huggingface:1001@2000", "urn:air:wanvideo:lora:civitai:", "urn:air:wanvideo:lora:civitai:1@",
		"urn:air:a:b:c:civitai:1@2", "urn:air:wanvideo:lora:civitai:1+5", "urn:air:wan video:lora:civitai:1@2",
		"hf:org/repo", "2001", "model/1001", "ftp://civitai.com/models/1",
		strings.Repeat("a", 3000),
	}
	for _, in := range bad {
		r, err := ParseRef(in)
		if err == nil {
			t.Errorf("ParseRef(%q) = %+v, want an error", in, r)
			continue
		}
		if !errors.Is(err, ErrBadRef) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseRef(%q): error %q should wrap ErrBadRef on one line", in, err)
		}
	}
}

func TestRefString(t *testing.T) {
	for _, r := range []Ref{{VersionID: 5}, {ModelID: 7}, {ModelID: 7, VersionID: 5}} {
		got, err := ParseRef(r.String())
		if err != nil || got != r {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", r.String(), got, err, r)
		}
	}
}

func TestMapBaseModel(t *testing.T) {
	cases := []struct {
		in, want string
		note     bool
	}{
		{"Wan Video 1.3B t2v", lora.BaseT2V1_3B, false},
		{"Wan Video 14B t2v", lora.BaseT2V14B, false},
		{"Wan Video 14B i2v 480p", lora.BaseI2V14B, false},
		{"Wan Video 14B i2v 720p", lora.BaseI2V14B, false},
		{"wan video 14b  I2V 720P", lora.BaseI2V14B, false},
		{" Wan Video 1.3B t2v ", lora.BaseT2V1_3B, false},
		{"Wan Video 2.2 T2V-A14B", lora.BaseUnknown, true},
		{"Wan Video 2.2 I2V-A14B", lora.BaseUnknown, true},
		{"Wan Video 2.2 TI2V-5B", lora.BaseUnknown, true},
		{"Wan Video 2.5 T2V", lora.BaseUnknown, true},
		{"Wan Video", lora.BaseUnknown, true},
		{"SDXL 1.0", lora.BaseUnknown, true},
		{"Flux.1 D", lora.BaseUnknown, true},
		{"Hunyuan Video", lora.BaseUnknown, true},
		{"", lora.BaseUnknown, true},
	}
	for _, c := range cases {
		if got := MapBaseModel(c.in); got != c.want {
			t.Errorf("MapBaseModel(%q) = %q, want %q", c.in, got, c.want)
		}
		note := BaseNote(c.in)
		if (note != "") != c.note {
			t.Errorf("BaseNote(%q) = %q", c.in, note)
		}
	}
	if n := BaseNote("Wan Video 2.2 T2V-A14B"); !strings.Contains(n, "Wan 2.2") {
		t.Errorf("BaseNote for Wan 2.2 should say why: %q", n)
	}
	for _, id := range []string{lora.BaseT2V14B, lora.BaseT2V1_3B, lora.BaseI2V14B} {
		for _, label := range CivitaiBases(id) {
			if MapBaseModel(label) != id {
				t.Errorf("CivitaiBases(%s) holds %q which maps to %s", id, label, MapBaseModel(label))
			}
		}
	}
	if CivitaiBases(lora.BaseUnknown) != nil {
		t.Error("unknown base should have no CivitAI labels")
	}
}

func TestSanitizeFileName(t *testing.T) {
	ok := map[string]string{
		"style.safetensors":                       "style.safetensors",
		"Style LoRA v1.SafeTensors":               "Style LoRA v1.SafeTensors",
		"loras/style.safetensors":                 "style.safetensors",
		"ab?c:d.safetensors":                      "ab_c_d.safetensors",
		".hidden.safetensors":                     "hidden.safetensors",
		"CON.safetensors":                         "_CON.safetensors",
		"日本語スタイル.safetensors":                     "日本語スタイル.safetensors",
		strings.Repeat("x", 300) + ".safetensors": strings.Repeat("x", maxFileName-len(".safetensors")) + ".safetensors",
	}
	for in, want := range ok {
		got, err := SanitizeFileName(in)
		if err != nil || got != want {
			t.Errorf("SanitizeFileName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{
		"", "../evil.safetensors", "../../etc/evil.safetensors", "a/../../evil.safetensors", "..\\..\\evil.safetensors",
		"/etc/evil.safetensors", "C:\\evil.safetensors", "c:evil.safetensors", "evil.txt", "evil.safetensors.exe", "evil.ckpt",
		"evil.pt", "a\x00b.safetensors", "a\nb.safetensors", "a\x1b[31mb.safetensors", "a\u202eb.safetensors",
		".safetensors", "...safetensors", "..", ".", "\xff\xfe.safetensors", " .. /x.safetensors",
	} {
		if got, err := SanitizeFileName(in); err == nil || !errors.Is(err, ErrUnsafe) {
			t.Errorf("SanitizeFileName(%q) = %q, %v; want ErrUnsafe", in, got, err)
		}
	}
}
