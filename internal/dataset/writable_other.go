//go:build !unix

package dataset

import "os"

// writable: this process may create files in dir (no access(2) here: a file is made
// and removed).
func writable(dir string) bool {
	f, err := os.CreateTemp(dir, ".scopectl-w-*")
	if err != nil {
		return false
	}
	f.Close()
	os.Remove(f.Name())
	return true
}
