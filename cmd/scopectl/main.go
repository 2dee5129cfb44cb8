// Command scopectl runs the whole life of a video LoRA for Daydream Scope.
package main

import (
	"os"

	"github.com/daydreamlive/scopectl/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
