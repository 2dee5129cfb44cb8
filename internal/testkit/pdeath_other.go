//go:build !linux

package testkit

import "os/exec"

func setPdeathsig(*exec.Cmd) {}
