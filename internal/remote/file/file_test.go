package file_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/daydreamlive/scopectl/internal/remote"
	"github.com/daydreamlive/scopectl/internal/remote/file"
	"github.com/daydreamlive/scopectl/internal/remote/remotetest"
)

func TestConformance(t *testing.T) {
	dirs := map[*testing.T]string{}
	remotetest.Run(t, func(t *testing.T) remote.Remote {
		d := t.TempDir()
		dirs[t] = d
		r, err := remote.Open(context.Background(), "file://"+d, remote.Env{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}, remotetest.Options{Resumes: true, Peek: func(t *testing.T) []string {
		des, _ := os.ReadDir(dirs[t])
		var out []string
		for _, de := range des {
			out = append(out, de.Name())
		}
		return out
	}})
	_ = file.New
}

// A plain path is a local folder as it is: relative to the working directory, with
// '#', '?', '%' and spaces (sync --to ./loras, lora dirs with odd names).
func TestOpenPlainPath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, p := range []string{"loras", "./a/b", "odd #1 ?x 100%"} {
		r, err := remote.Open(context.Background(), p, remote.Env{})
		if err != nil {
			t.Fatalf("%q: %v", p, err)
		}
		want := filepath.Join(dir, p)
		if got := r.(*file.Folder).Dir(); got != want {
			t.Errorf("%q: opened %q, want %q", p, got, want)
		}
		if st, err := os.Stat(want); err != nil || !st.IsDir() {
			t.Errorf("%q: %v", p, err)
		}
		r.Close()
	}
}
