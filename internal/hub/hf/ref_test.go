package hf

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseRef(t *testing.T) {
	ok := []struct {
		in   string
		want Ref
	}{
		{"hf://org/name", Ref{Repo: "org/name", RepoType: "model", Revision: "main"}},
		{"org/name", Ref{Repo: "org/name", RepoType: "model", Revision: "main"}},
		{"hf://org/name@v1.0", Ref{Repo: "org/name", RepoType: "model", Revision: "v1.0"}},
		{"hf://org/name@v1/lora.safetensors", Ref{Repo: "org/name", RepoType: "model", Revision: "v1", Paths: []string{"lora.safetensors"}}},
		{"hf://org/name/a/b/c.safetensors", Ref{Repo: "org/name", RepoType: "model", Revision: "main", Paths: []string{"a/b/c.safetensors"}}},
		{"hf://org/name/folder/", Ref{Repo: "org/name", RepoType: "model", Revision: "main", Paths: []string{"folder"}}},
		{"hf://org/name@refs/pr/3/x.safetensors", Ref{Repo: "org/name", RepoType: "model", Revision: "refs/pr/3", Paths: []string{"x.safetensors"}}},
		{"hf://org/name@refs%2Fpr%2F3", Ref{Repo: "org/name", RepoType: "model", Revision: "refs/pr/3"}},
		{"hf://org/name@0123456789abcdef0123456789abcdef01234567", Ref{Repo: "org/name", RepoType: "model", Revision: "0123456789abcdef0123456789abcdef01234567"}},
		{"hf://datasets/org/data@main/x.csv", Ref{Repo: "org/data", RepoType: "dataset", Revision: "main", Paths: []string{"x.csv"}}},
		{"hf://spaces/org/app", Ref{Repo: "org/app", RepoType: "space", Revision: "main"}},
		{"https://huggingface.co/org/name", Ref{Repo: "org/name", RepoType: "model", Revision: "main"}},
		{"https://huggingface.co/org/name/blob/main/lora.safetensors", Ref{Repo: "org/name", RepoType: "model", Revision: "main", Paths: []string{"lora.safetensors"}}},
		{"https://huggingface.co/org/name/resolve/refs%2Fpr%2F1/a%20b.safetensors", Ref{Repo: "org/name", RepoType: "model", Revision: "refs/pr/1", Paths: []string{"a b.safetensors"}}},
		{"https://huggingface.co/datasets/org/d/tree/v2/sub", Ref{Repo: "org/d", RepoType: "dataset", Revision: "v2", Paths: []string{"sub"}}},
		{"hf://Wan-AI/Wan2.1-T2V-1.3B", Ref{Repo: "Wan-AI/Wan2.1-T2V-1.3B", RepoType: "model", Revision: "main"}},
	}
	for _, tc := range ok {
		got, err := ParseRef(tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %+v want %+v", tc.in, got, tc.want)
		}
	}
	bad := []string{
		"", "hf://", "hf://org", "hf://org/", "hf:///name", "s3://org/name", "org/name@",
		"hf://org/name/../x", "hf://org/name/a//b", "hf://org/na--me", "hf://org/name.git",
		"hf://org/name@..", "hf://org/name@a..b/../c", "hf://org/name/a\\b", "hf://org/name/x\x00",
		"https://user:pw@huggingface.co/org/name", "https://huggingface.co/org/name/settings",
		"hf://org/name@refs%2F..%2Fx", "hf://org/name/C:x", "hf://o/n@a:b",
	}
	for _, in := range bad {
		if r, err := ParseRef(in); err == nil {
			t.Errorf("%q accepted as %+v", in, r)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: multi-line error", in)
		}
	}
	if s := (Ref{Repo: "o/n", RepoType: "dataset", Revision: "v1", Paths: []string{"a/b"}}).String(); s != "hf://datasets/o/n@v1/a/b" {
		t.Errorf("String() = %s", s)
	}
}

func TestRepoFolder(t *testing.T) {
	for in, want := range map[[2]string]string{
		{"model", "julien-c/EsperBERTo-small"}: "models--julien-c--EsperBERTo-small",
		{"dataset", "google/fleurs"}:           "datasets--google--fleurs",
		{"space", "o/app"}:                     "spaces--o--app",
		{"", "o/x"}:                            "models--o--x",
	} {
		if got := RepoFolder(in[0], in[1]); got != want {
			t.Errorf("%v: %s", in, got)
		}
	}
}

// TestMatch follows Python's fnmatch.fnmatchcase and filter_repo_objects.
func TestMatch(t *testing.T) {
	cases := []struct {
		pat, name string
		want      bool
	}{
		{"*.safetensors", "a.safetensors", true},
		{"*.safetensors", "dir/sub/a.safetensors", true}, // '*' crosses '/'
		{"*.safetensors", "a.safetensors.bak", false},
		{"dir/", "dir/a", true},
		{"dir/", "dir/sub/a", true},
		{"dir/", "dirx/a", false},
		{"dir", "dir/a", false},
		{"?.md", "a.md", true},
		{"?.md", "ab.md", false},
		{"[ab].md", "b.md", true},
		{"[!ab].md", "c.md", true},
		{"[!ab].md", "a.md", false},
		{"[a-c]x", "bx", true},
		{"[a-c]x", "dx", false},
		{"[]]x", "]x", true},
		{"[x", "[x", true}, // unclosed bracket is literal
		{"a.b", "axb", false},
		{"(x)+", "(x)+", true},
		{"*.SAFETENSORS", "a.safetensors", false}, // case-sensitive
		{"dir\\*.md", "dir/x.md", true},           // backslash is a separator
		{"[-a]", "-", true},
		{"[a-]", "-", true},
		{"**/*.json", "a/b/c.json", true},
		{"**/*.json", "c.json", false}, // like fnmatch: needs a '/'
	}
	for _, tc := range cases {
		m, err := newMatcher([]string{tc.pat}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.match(tc.name); got != tc.want {
			t.Errorf("fnmatch(%q, %q) = %v", tc.name, tc.pat, got)
		}
	}
	m, _ := newMatcher([]string{"*.pdf"}, []string{".*"})
	var out []string
	for _, n := range []string{"aaa.pdf", "bbb.jpg", ".ccc.pdf", ".ddd.png"} {
		if m.match(n) {
			out = append(out, n)
		}
	}
	if strings.Join(out, ",") != "aaa.pdf" {
		t.Errorf("filter_repo_objects example: %v", out)
	}
}

func TestSafePath(t *testing.T) {
	for _, p := range []string{"a", "a/b.safetensors", "a b/c-d_e.f", "日本/ファイル.safetensors", ".gitattributes", "a/.hidden"} {
		if err := safePath(p); err != nil {
			t.Errorf("%q: %v", p, err)
		}
	}
	for _, p := range []string{"", "/a", "a/", "a//b", "..", "a/..", "./a", "a\\b", "a\x00b", "a\nb", "C:x", "\xff", "a/\u0085", strings.Repeat("a", 256), strings.Repeat("a/", 600)} {
		if err := safePath(p); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	for in, want := range map[string][4]int64{
		"bytes 0-9/100":   {0, 9, 100, 1},
		"bytes 10-19/*":   {10, 19, -1, 1},
		"bytes 10-9/100":  {0, 0, 0, 0},
		"bytes 0-100/100": {0, 0, 0, 0},
		"items 0-1/2":     {0, 0, 0, 0},
		"bytes -1-2/3":    {0, 0, 0, 0},
		"bytes 0-1":       {0, 0, 0, 0},
	} {
		a, b, tot, ok := parseContentRange(in)
		got := [4]int64{a, b, tot, 0}
		if ok {
			got[3] = 1
		}
		if got != want {
			t.Errorf("%q: %v", in, got)
		}
	}
}

func TestNextLink(t *testing.T) {
	for in, want := range map[string]string{
		`<https://huggingface.co/api/models/o/x/tree/main?cursor=abc>; rel="next"`: "https://huggingface.co/api/models/o/x/tree/main?cursor=abc",
		`<https://a/prev>; rel="prev", <https://a/next>; rel="next"`:               "https://a/next",
		`<https://a/x>; rel="last"`:                                                "",
		`garbage`:                                                                  "",
		`<https://huggingface.co/api/models/o/x/tree/main?recursive=true&cursor=Zm9v>; rel = "next"`: "https://huggingface.co/api/models/o/x/tree/main?recursive=true&cursor=Zm9v",
	} {
		if got := nextLink([]string{in}); got != want {
			t.Errorf("%s: %q", in, got)
		}
	}
}
