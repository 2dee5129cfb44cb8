//go:build !linux

package main

import (
	"os"
	"time"
)

func ctime(fi os.FileInfo) time.Time { return fi.ModTime() }
