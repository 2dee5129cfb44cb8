package dataset

import (
	"bytes"
	"strings"
	"testing"
)

const sha0 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

func TestManifestCanonical(t *testing.T) {
	m, err := NewManifest([]ManifestFile{
		{Path: "clips/b.mp4", Size: 10, SHA256: strings.Repeat("b", 64)},
		{Path: "a.txt", Size: 0, SHA256: sha0},
		{Path: "clips/a.mp4", Size: 7, SHA256: strings.Repeat("a", 64)},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "a.txt\x000\x00" + sha0 + "\n" + "clips/a.mp4\x007\x00" + strings.Repeat("a", 64) + "\n" + "clips/b.mp4\x0010\x00" + strings.Repeat("b", 64) + "\n"
	if got := string(m.Bytes()); got != want {
		t.Fatalf("canonical form %q", got)
	}
	back, err := ParseManifest(m.Bytes())
	if err != nil || back.SHA256() != m.SHA256() || len(back.Files) != 3 || back.TotalBytes() != 17 {
		t.Fatalf("%+v %v", back, err)
	}
	if v, i := m.Items(); v != 2 || i != 0 {
		t.Fatalf("items %d %d", v, i)
	}
	// the empty manifest is valid (and has the sha256 of no bytes)
	if e, err := ParseManifest(nil); err != nil || e.SHA256() != sha0 {
		t.Fatal(e, err)
	}
	if _, err := NewManifest([]ManifestFile{{Path: "a", SHA256: sha0}, {Path: "a", SHA256: sha0}}); err == nil {
		t.Fatal("a path listed twice")
	}
}

func TestParseManifestRefuses(t *testing.T) {
	line := func(p, size, sha string) string { return p + "\x00" + size + "\x00" + sha + "\n" }
	for name, in := range map[string]string{
		"no newline":     strings.TrimSuffix(line("a.mp4", "1", sha0), "\n"),
		"two fields":     "a.mp4\x001\n",
		"dotdot":         line("../a.mp4", "1", sha0),
		"inner dotdot":   line("x/../../a.mp4", "1", sha0),
		"absolute":       line("/etc/passwd", "1", sha0),
		"hidden":         line("x/.a.mp4", "1", sha0),
		"unclean":        line("x//a.mp4", "1", sha0),
		"trailing slash": line("x/", "1", sha0),
		"control":        line("a\tb.mp4", "1", sha0),
		"bad utf8":       line("a\xffb.mp4", "1", sha0),
		"negative":       line("a.mp4", "-1", sha0),
		"leading zero":   line("a.mp4", "01", sha0),
		"plus":           line("a.mp4", "+1", sha0),
		"upper sha":      line("a.mp4", "1", strings.ToUpper(sha0)),
		"short sha":      line("a.mp4", "1", sha0[:63]),
		"unsorted":       line("b.mp4", "1", sha0) + line("a.mp4", "1", sha0),
		"duplicate":      line("a.mp4", "1", sha0) + line("a.mp4", "1", sha0),
		"empty path":     line("", "1", sha0),
	} {
		if _, err := ParseManifest([]byte(in)); err == nil {
			t.Errorf("%s: accepted %q", name, in)
		}
	}
}

// FuzzParseManifest: whatever the parser accepts is canonical (Bytes gives the input
// back), holds only paths that stay inside a folder, and never panics.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte("a.txt\x000\x00" + sha0 + "\n"))
	f.Add([]byte("clips/a.mp4\x0012\x00" + sha0 + "\nclips/a.txt\x003\x00" + sha0 + "\n"))
	f.Add([]byte("../a\x001\x00" + sha0 + "\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			return
		}
		if !bytes.Equal(m.Bytes(), b) {
			t.Fatalf("not canonical: %q gives back %q", b, m.Bytes())
		}
		for _, f := range m.Files {
			if ValidPath(f.Path) != nil || strings.Contains("/"+f.Path+"/", "/../") || strings.HasPrefix(f.Path, "/") || f.Size < 0 {
				t.Fatalf("accepted %+v", f)
			}
		}
	})
}
