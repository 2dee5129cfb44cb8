//go:build !unix

package hf

import (
	"errors"
	"os"
)

func tryLock(*os.File) (bool, error) { return false, errors.New("no flock") }

func unlockFile(*os.File) {}

func preallocate(f *os.File, size int64) error { return f.Truncate(size) }
