//go:build !unix

package inflight

import "os"

// alive: a process with that id exists (FindProcess opens it on Windows).
func alive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	p.Release()
	return true
}
