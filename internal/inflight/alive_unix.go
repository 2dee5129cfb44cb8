//go:build unix

package inflight

import (
	"errors"
	"syscall"
)

// alive: a process with that id exists (signal 0 reaches it, or it belongs to someone else).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
