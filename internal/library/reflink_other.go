//go:build !linux

package library

import (
	"errors"
	"os"
)

func reflink(dst, src *os.File) error { return errors.New("reflink not supported") }
