package aitk

import (
	"fmt"
	"testing"
	"time"
)

func TestRT(t *testing.T) {
	for _, b := range Bases() {
		for _, g := range []float64{16, 24, 48, 80} {
			c, err := Init(InitOptions{Base: b.Name, DatasetDir: "/workspace/data/my clips", GPUMemGiB: g, TriggerWord: "sks"})
			if err != nil {
				fmt.Println(b.Name, g, err)
				continue
			}
			fmt.Println(b.Name, g, c.Notes)
			for _, p := range Validate(c, ValidateOptions{GPUMemGiB: g, CollectBudget: 2 * time.Minute}) {
				fmt.Println("   ", p.Severity, p)
			}
		}
	}
	c, _ := Init(InitOptions{Base: "wan2.1-t2v-14b", DatasetDir: "/workspace/data/clips", GPUMemGiB: 80})
	b, _ := c.Marshal(YAML)
	fmt.Println(string(b))
}
