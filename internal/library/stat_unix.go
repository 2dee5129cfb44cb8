//go:build unix

package library

import (
	"os"
	"syscall"
)

// inode returns fi's inode number and link count (0, 0 where the platform has none).
func inode(fi os.FileInfo) (ino, nlink uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino), uint64(st.Nlink)
	}
	return 0, 0
}
