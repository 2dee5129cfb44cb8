// Command servefill fills a scopectl data dir with N synthetic library entries (each
// with an origin), for bench/serve.sh.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/daydreamlive/scopectl/internal/store"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: servefill DATA_DIR N")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	s, err := store.OpenSQLite(os.Args[1] + "/scopectl.db")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer s.Close()
	ctx := context.Background()
	bases := []string{"wan2.1-t2v-14b", "wan2.1-t2v-1.3b", "wan2.1-i2v-14b"}
	fams := []string{"comfy", "diffusers", "kohya"}
	for i := 0; i < n; i++ {
		l := store.LoRA{SHA256: fmt.Sprintf("%064x", i+1), Name: fmt.Sprintf("lora-%05d", i), Size: int64(20+i%80) << 20,
			Path: fmt.Sprintf("/data/blobs/%064x", i+1), Managed: true, Family: fams[i%3], Base: bases[i%3], Rank: 16 << (i % 3),
			Info:    []byte(`{"note":"inspection report stand-in","modules":400}`),
			Origins: []store.Origin{{Kind: "training", Job: fmt.Sprintf("job-%03d", i/50), Step: int64(250 * (i%12 + 1))}}}
		if err := s.AddLoRA(ctx, l); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
