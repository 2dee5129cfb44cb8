//go:build !linux

package aitk

import (
	"os"
	"time"
)

// ctime falls back to the modification time where the change time is not
// read (ai-toolkit runs on Linux; this only serves local tests).
func ctime(fi os.FileInfo) time.Time { return fi.ModTime() }
