//go:build !unix

package guard

import (
	"errors"
	"os"
)

var errWouldBlock = errors.New("locked")

// flock: the guard runs on the Linux pod or host it watches, never on the laptop.
func flock(*os.File) error {
	return errors.New("the guard runs only on Linux (it watches the machine it runs on)")
}
