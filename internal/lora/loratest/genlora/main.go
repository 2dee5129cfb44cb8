// Command genlora writes synthetic Wan2.1 LoRAs with real shapes, for benchmarks and
// for checks against the Python safetensors/peft stack. It is a test tool, not part of
// scopectl.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/daydreamlive/scopectl/internal/lora"
	"github.com/daydreamlive/scopectl/internal/lora/loratest"
	"github.com/daydreamlive/scopectl/internal/safetensors"
)

func main() {
	var s loratest.Spec
	var fam, blocks, modules, dtype string
	flag.StringVar(&s.Base, "base", lora.BaseT2V14B, "base model id")
	flag.StringVar(&fam, "family", "comfy", "diffusers, comfy or kohya")
	flag.IntVar(&s.Rank, "rank", 16, "rank")
	flag.Float64Var(&s.Alpha, "alpha", 0, "alpha (0: none stored)")
	flag.StringVar(&blocks, "blocks", "all", "comma-separated block indices, or all")
	flag.StringVar(&modules, "modules", "", "comma-separated per-block modules (default: attention + ffn)")
	flag.StringVar(&dtype, "dtype", "BF16", "tensor dtype")
	flag.Uint64Var(&s.Seed, "seed", 1, "random seed")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: genlora [flags] OUT.safetensors")
		os.Exit(2)
	}
	f, ok := lora.ParseFamily(fam)
	if !ok {
		fmt.Fprintln(os.Stderr, "bad -family")
		os.Exit(2)
	}
	s.Family, s.DType = f, safetensors.DType(dtype)
	if blocks == "all" {
		a, _ := lora.ArchOf(s.Base)
		for i := 0; i < a.Layers; i++ {
			s.Blocks = append(s.Blocks, i)
		}
	} else {
		for _, b := range strings.Split(blocks, ",") {
			n, err := strconv.Atoi(b)
			if err != nil {
				fmt.Fprintln(os.Stderr, "bad -blocks")
				os.Exit(2)
			}
			s.Blocks = append(s.Blocks, n)
		}
	}
	if modules != "" {
		s.Modules = strings.Split(modules, ",")
	}
	if err := loratest.Write(flag.Arg(0), s); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
