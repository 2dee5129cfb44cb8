package scope

import (
	"os"
	"path/filepath"
	"sync"
)

var (
	dirLocksMu sync.Mutex
	dirLocks   = map[string]*sync.Mutex{}
)

// lockDir takes an in-process mutex for dir and then the cross-process
// advisory lock on dir/LockName.
func lockDir(dir string) (func(), error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	dirLocksMu.Lock()
	mu := dirLocks[abs]
	if mu == nil {
		mu = new(sync.Mutex)
		dirLocks[abs] = mu
	}
	dirLocksMu.Unlock()
	mu.Lock()
	f, err := os.OpenFile(filepath.Join(abs, LockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		mu.Unlock()
		return nil, err
	}
	if err := flock(f); err != nil {
		f.Close()
		mu.Unlock()
		return nil, err
	}
	return func() {
		f.Close() // releases the flock
		mu.Unlock()
	}, nil
}
