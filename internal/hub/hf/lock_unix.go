//go:build unix

package hf

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// tryLock takes an exclusive flock without waiting: (true, nil) taken, (false, nil) held
// by someone else, error when the file system has no flock.
func tryLock(f *os.File) (bool, error) {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EWOULDBLOCK):
			return false, nil
		}
		return false, err
	}
}

func unlockFile(f *os.File) { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN) }

// preallocate reserves size bytes so a full disk shows at the start; file systems that
// cannot do it only get the length set.
func preallocate(f *os.File, size int64) error {
	if size <= 0 {
		return nil
	}
	if err := fallocate(f, size); err != nil {
		return err
	}
	return f.Truncate(size)
}
