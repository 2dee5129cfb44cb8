//go:build !unix

package train

import (
	"errors"
	"fmt"
	"syscall"
)

func newProcessGroup() *syscall.SysProcAttr { return nil }

func signalGroup(pid int, sig syscall.Signal) {}

func signalName(s syscall.Signal) string { return fmt.Sprintf("signal %d", int(s)) }

func lockJob(path string) (func(), error) {
	return nil, errors.New("the training supervisor runs on Linux machines only")
}

func lockHeld(path string) bool { return false }

// Detach is a no-op off Unix.
func Detach() {}

func trainerAlive(pid int, jobID string) bool { return false }

func reapOrphans() {}
