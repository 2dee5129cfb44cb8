//go:build unix

package dataset

import "golang.org/x/sys/unix"

// writable: this process may create files in dir (ai-toolkit writes .aitk_size.json
// and its caches beside the media).
func writable(dir string) bool { return unix.Access(dir, unix.W_OK) == nil }
