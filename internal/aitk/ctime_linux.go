//go:build linux

package aitk

import (
	"os"
	"syscall"
	"time"
)

// ctime is the inode change time Python's os.path.getctime returns on Linux.
func ctime(fi os.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return time.Unix(int64(st.Ctim.Sec), int64(st.Ctim.Nsec))
	}
	return fi.ModTime()
}
