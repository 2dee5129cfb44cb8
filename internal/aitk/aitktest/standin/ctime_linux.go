//go:build linux

package main

import (
	"os"
	"syscall"
	"time"
)

// ctime is os.path.getctime.
func ctime(fi os.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
	}
	return fi.ModTime()
}
