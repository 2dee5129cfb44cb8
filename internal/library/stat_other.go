//go:build !unix

package library

import "os"

func inode(fi os.FileInfo) (ino, nlink uint64) { return 0, 0 }
