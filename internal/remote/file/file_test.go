package file_test

import (
	"context"
	"os"
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
