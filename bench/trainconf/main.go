// Command trainconf prints an ai-toolkit job config for the stand-in (bench/train.sh).
package main

import (
	"flag"
	"fmt"

	"github.com/daydreamlive/scopectl/internal/aitk/aitktest"
)

func main() {
	var c aitktest.Config
	flag.StringVar(&c.Name, "name", "benchlora", "job name")
	flag.StringVar(&c.Dataset, "dataset", "", "dataset folder")
	flag.IntVar(&c.Steps, "steps", 20, "steps")
	flag.IntVar(&c.SaveEvery, "save-every", 10, "save every")
	flag.IntVar(&c.Keep, "keep", 4, "saves kept")
	flag.IntVar(&c.Rank, "rank", 16, "LoRA rank (Wan2.1 1.3B at rank 16 holds 43.7 MB of tensors; 64 holds 175 MB)")
	flag.Parse()
	c.TrainingFolder = "output"
	fmt.Println(c.JSON())
}
