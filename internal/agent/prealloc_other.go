//go:build !linux

package agent

import "os"

// preallocate is a no-op where fallocate is not available; Truncate makes the file.
func preallocate(*os.File, int64) error { return nil }
