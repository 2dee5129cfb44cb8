// Command mkcache makes a Hugging Face cache with scopectl's real download client, for
// checking it against huggingface_hub (tools/devicecheck/hf_cache_check.py). It starts
// the hftest fake Hub, pulls a demo LoRA repo (README in git, two LFS safetensors, one
// nested two folders deep, fetched in parallel ranges) into -dir, records a missing path
// as .no_exist, and prints the repo id and the files as JSON on stdout.
//
//	go run ./internal/hub/hf/hftest/mkcache -dir /tmp/hfcache > manifest.json
//	HF_HUB_OFFLINE=1 python3 tools/devicecheck/hf_cache_check.py /tmp/hfcache daydream/demo-lora manifest.json
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/daydreamlive/scopectl/internal/hub/hf"
	"github.com/daydreamlive/scopectl/internal/hub/hf/hftest"
	"github.com/daydreamlive/scopectl/internal/secret"
)

type manifest struct {
	RepoID   string    `json:"repo_id"`
	RepoType string    `json:"repo_type"`
	Revision string    `json:"revision"`
	Commit   string    `json:"commit"`
	CacheDir string    `json:"cache_dir"`
	Files    []hf.File `json:"files"`
	NoExist  []string  `json:"no_exist"`
	Complete bool      `json:"complete"` // every file of the repo was pulled
}

func main() {
	dir := flag.String("dir", "", "cache folder to fill (HF_HUB_CACHE)")
	repo := flag.String("repo", "daydream/demo-lora", "repo id to create and pull")
	private := flag.Bool("private", false, "make the repo private (pulled with a token)")
	tag := flag.String("tag", "v1", "also create this tag on a commit with only the README, and pull it")
	include := flag.String("include", "", "pull only files matching this glob (default: all)")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "mkcache: -dir is required")
		os.Exit(2)
	}
	if err := run(*dir, *repo, *private, *tag, *include); err != nil {
		fmt.Fprintln(os.Stderr, "mkcache:", err)
		os.Exit(1)
	}
}

func run(dir, repo string, private bool, tag, include string) error {
	srv := hftest.NewServer(hftest.Options{PageSize: 2})
	defer srv.Close()
	files, err := hftest.DemoFiles()
	if err != nil {
		return err
	}
	commit := srv.AddRepo(hftest.Repo{ID: repo, Private: private, Files: files})
	const token = "hf_mkcacheLocalTestToken000000000"
	srv.AddToken(token, true)
	c := &hf.Client{Endpoint: srv.URL(), Token: secret.New(token), Connections: 4, ChunkSize: 128 << 10}
	ctx := context.Background()
	opt := hf.PullOptions{}
	if include != "" {
		opt.Include = []string{include}
	}
	got, err := c.Pull(ctx, dir, hf.Ref{Repo: repo}, opt)
	if err != nil {
		return err
	}
	const missing = "missing/not_here.safetensors"
	if _, err := c.Pull(ctx, dir, hf.Ref{Repo: repo, Paths: []string{missing}}, hf.PullOptions{}); !errors.Is(err, hf.ErrNotFound) {
		return fmt.Errorf("pulling a missing path: want not found, got %v", err)
	}
	if tag != "" {
		srv.AddRevision("model", repo, tag, files[:1])
		if _, err := c.Pull(ctx, dir, hf.Ref{Repo: repo, Revision: tag}, hf.PullOptions{}); err != nil {
			return err
		}
	}
	m := manifest{RepoID: repo, RepoType: "model", Revision: "main", Commit: commit, CacheDir: dir,
		Files: got, NoExist: []string{missing}, Complete: len(got) == len(files)}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(m)
}
