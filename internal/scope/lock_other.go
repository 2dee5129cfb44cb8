//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package scope

import "os"

// flock is a no-op where flock(2) is unavailable; only the in-process mutex
// serializes updates there.
func flock(*os.File) error { return nil }
