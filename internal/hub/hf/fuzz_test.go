package hf

import (
	"encoding/json"
	"strings"
	"testing"
)

// The Hub's JSON is untrusted: whatever it sends, decoding must not panic, and anything
// accepted must be safe to use as a cache path and blob name.

func FuzzDecodeTree(f *testing.F) {
	f.Add([]byte(`[{"type":"file","oid":"95a8c3f1d1b7e2b0c7d1bd5ab0b0e7b35b0ba1fe","size":61,"path":"README.md"},` +
		`{"type":"directory","oid":"0000000000000000000000000000000000000000","size":0,"path":"sub"},` +
		`{"type":"file","oid":"b2bd5a2e1f7c4d0d8d2f0b0e1a7e1c2f3a4b5c6d","size":24616,"path":"sub/lora.safetensors",` +
		`"lfs":{"oid":"2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae","size":24616,"pointerSize":134},` +
		`"xetHash":"4f2c9a3c2b1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f"}]`))
	f.Add([]byte(`[{"type":"file","oid":"95a8c3f1d1b7e2b0c7d1bd5ab0b0e7b35b0ba1fe","size":1,"path":"../x"}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"error":"Repository not found"}`))
	f.Add([]byte(`[{"type":"file","oid":"95a8c3f1d1b7e2b0c7d1bd5ab0b0e7b35b0ba1fe","size":-1,"path":"a"}] trailing`))
	f.Fuzz(func(t *testing.T, data []byte) {
		files, err := decodeTreePage(data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		for _, fl := range files {
			if safePath(fl.Path) != nil {
				t.Fatalf("unsafe path accepted: %q", fl.Path)
			}
			if fl.Size < 0 {
				t.Fatalf("negative size for %q", fl.Path)
			}
			e := fl.etag()
			if !sha1Re.MatchString(e) && !sha256Re.MatchString(e) {
				t.Fatalf("blob name %q", e)
			}
			if linkTarget(fl.Path, e) == "" || strings.Contains(e, "/") {
				t.Fatal("bad link target")
			}
		}
		if checkListing(files) == nil {
			seen := map[string]bool{}
			for _, fl := range files {
				if seen[fl.Path] {
					t.Fatalf("duplicate %q passed checkListing", fl.Path)
				}
				seen[fl.Path] = true
			}
			if _, err := encodeTreeCache(files); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func FuzzDecodeRepoInfo(f *testing.F) {
	f.Add([]byte(`{"_id":"x","id":"o/n","sha":"0123456789abcdef0123456789abcdef01234567","private":false,"gated":"auto",` +
		`"siblings":[{"rfilename":"README.md"},{"rfilename":"lora.safetensors","size":24616,"blobId":"b2bd5a2e1f7c4d0d8d2f0b0e1a7e1c2f3a4b5c6d",` +
		`"lfs":{"sha256":"2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae","size":24616,"pointerSize":134}}]}`))
	f.Add([]byte(`{"sha":"../../etc","siblings":[]}`))
	f.Add([]byte(`{"sha":"0123456789abcdef0123456789abcdef01234567","siblings":[{"rfilename":"/abs"}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ri, err := decodeRepoInfo(data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if !commitRe.MatchString(ri.SHA) {
			t.Fatalf("commit %q accepted", ri.SHA)
		}
		for _, s := range ri.Siblings {
			if safePath(s.RFilename) != nil {
				t.Fatalf("unsafe sibling %q", s.RFilename)
			}
		}
		if _, err := json.Marshal(ri); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"hf://org/name@v1/a/b.safetensors", "org/name", "https://huggingface.co/datasets/o/d/resolve/refs%2Fpr%2F1/x", "hf://o/n@refs/pr/1/x", "hf://o/n/../x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			return
		}
		if validRepoID(r.Repo) != nil || validRevision(r.Revision) != nil {
			t.Fatalf("%q gave invalid %+v", s, r)
		}
		for _, p := range r.Paths {
			if safePath(p) != nil {
				t.Fatalf("%q gave unsafe path %q", s, p)
			}
		}
		if strings.Contains(RepoFolder(r.RepoType, r.Repo), "/") {
			t.Fatalf("folder with a slash for %q", s)
		}
		r2, err := ParseRef(r.String())
		if err != nil || r2.Repo != r.Repo || r2.Revision != r.Revision || r2.RepoType != r.RepoType {
			t.Fatalf("round trip %q -> %q -> %+v %v", s, r.String(), r2, err)
		}
	})
}
