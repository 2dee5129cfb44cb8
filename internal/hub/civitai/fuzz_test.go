package civitai

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/daydreamlive/scopectl/internal/lora"
)

// Seeds beyond testdata/fuzz/FuzzDecodeVersion (which holds answers of the fake CivitAI
// and hand-made hostile ones).
const seedVersion = `{"id":2514310,"modelId":827184,"name":"v16.0","baseModel":"Wan Video 14B t2v","availability":"Public",
"earlyAccessEndsAt":null,"trainedWords":["wanstyle"],"model":{"name":"Wan LoRA","type":"LORA"},
"files":[{"id":2402203,"name":"wan.safetensors","type":"Model","sizeKB":6775.35,"metadata":{"format":"SafeTensor","size":null,"fp":"bf16"},
"hashes":{"AutoV2":"A5F58EB1C3","SHA256":"A5F58EB1C33616C4F06BCA55AF39876A7B817913CD829CAA8ACB111B770C85CC"},
"downloadUrl":"https://civitai.com/api/download/models/2514310","primary":true}],"downloadUrl":"https://civitai.com/api/download/models/2514310"}`

func FuzzDecodeVersion(f *testing.F) {
	f.Add([]byte(seedVersion))
	f.Add([]byte(`{"id":1,"modelId":2,"files":[{"hashes":{"sha256":"zz"}}]}`))
	f.Add([]byte(`{"id":1,"modelId":2,"name":"\u001b[2J","earlyAccessEndsAt":"2999-01-01T00:00:00Z","files":null}`))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := decodeVersion(data, "https://civitai.com", now)
		if err != nil {
			if v != nil {
				t.Fatal("a version with an error")
			}
			return
		}
		if v.ID <= 0 || v.ModelID <= 0 {
			t.Fatalf("ids %d/%d accepted", v.ID, v.ModelID)
		}
		switch v.Base {
		case lora.BaseT2V14B, lora.BaseT2V1_3B, lora.BaseI2V14B:
			if v.BaseNote != "" {
				t.Fatalf("mapped base with a note: %q", v.BaseNote)
			}
		case lora.BaseUnknown:
			if v.BaseNote == "" {
				t.Fatal("unknown base without a note")
			}
		default:
			t.Fatalf("base %q", v.Base)
		}
		if !strings.HasPrefix(v.ModelPage, "https://civitai.com/models/") {
			t.Fatalf("model page %q", v.ModelPage)
		}
		texts := append([]string{v.Name, v.ModelName, v.ModelType, v.BaseModel, v.BaseNote}, v.TrainedWords...)
		for _, fi := range v.Files {
			texts = append(texts, fi.Name, fi.Type, fi.Format)
			if fi.SHA256 != "" && normSHA256(fi.SHA256) != fi.SHA256 {
				t.Fatalf("sha256 %q not normalized", fi.SHA256)
			}
			if fi.SizeKB < 0 || fi.SizeKB != fi.SizeKB {
				t.Fatalf("size %v", fi.SizeKB)
			}
		}
		for _, s := range texts {
			for _, r := range s {
				if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
					t.Fatalf("control character kept in %q", s)
				}
			}
		}
		// whatever the answer, the file choice either succeeds with a SafeTensor model
		// file or refuses
		if fi, err := primarySafetensors(v); err == nil {
			if !isSafeTensor(fi) || isPickle(fi) || !isModelFile(fi) {
				t.Fatalf("picked %+v", fi)
			}
		}
	})
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{
		"civitai:2001", "civitai:model/1001", "civitai:model/1001@2000",
		"https://civitai.com/models/1001/slug?modelVersionId=2000", "https://civitai.com/api/download/models/5",
		"urn:air:wanvideo:lora:civitai:1001@2000+3008.safetensor", "air:civitai:1@2", "civitai.com/models/1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			if r != (Ref{}) {
				t.Fatalf("%q: a ref with an error", s)
			}
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("%q: multi-line error", s)
			}
			return
		}
		if r.ModelID < 0 || r.VersionID < 0 || r.FileID < 0 || r.ModelID == 0 && r.VersionID == 0 {
			t.Fatalf("%q: bad ref %+v", s, r)
		}
		if r.FileID != 0 && r.VersionID == 0 {
			t.Fatalf("%q: file without version", s)
		}
		back, err := ParseRef(r.String())
		if err != nil || back.ModelID != r.ModelID || back.VersionID != r.VersionID {
			t.Fatalf("%q → %+v → %q → %+v, %v", s, r, r.String(), back, err)
		}
	})
}

func FuzzSanitizeFileName(f *testing.F) {
	for _, s := range []string{"a.safetensors", "../a.safetensors", "a/b.safetensors", "C:\\a.safetensors", ".a.safetensors", "CON.safetensors"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, err := SanitizeFileName(s)
		if err != nil {
			return
		}
		if !filepath.IsLocal(name) || filepath.Base(name) != name || strings.ContainsAny(name, "/\\:") ||
			strings.HasPrefix(name, ".") || strings.Contains(name, "..") && strings.Trim(name, ".") == "" {
			t.Fatalf("%q → unsafe %q", s, name)
		}
		if !strings.HasSuffix(strings.ToLower(name), ".safetensors") || len(name) > maxFileName {
			t.Fatalf("%q → %q", s, name)
		}
		for _, r := range name {
			if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
				t.Fatalf("%q → %q has control characters", s, name)
			}
		}
	})
}
