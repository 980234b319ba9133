// Package lockfile owns nixcell's inter-process locks: advisory flock(2)
// locks on files, one per container and one global lock for allocations,
// exclusive but for the claims that LockShared takes. A lock is held by an open file, so the kernel releases it
// when the holder exits or is killed; there is never a stale lock to clean up.
//
// A holder may delete its lock file (Handle.Remove). Every acquirer checks,
// after flock succeeds, that the path still names the file it locked, and
// starts over if not; so a process that was waiting on a deleted file never
// believes it holds the lock that the path now names.
package lockfile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nixcell/nixcell/internal/fault"

	"golang.org/x/sys/unix"
)

// ErrLocked is matched (errors.Is) by the error of TryLock when another
// holder has the lock, and by the error of Lock when its context ends
// before the lock came free.
var ErrLocked = fault.New(fault.Conflict, "held by another process")

// Polling bounds of Lock. Polling with LOCK_NB instead of one blocking
// flock is what makes the wait cancellable: a blocking flock cannot be
// interrupted from Go without signalling the thread.
const (
	minPoll = 10 * time.Millisecond
	maxPoll = 50 * time.Millisecond
)

// testHookWaiting, when set by a test, is called each time Lock finds the
// file it opened locked by someone else and starts to wait for it.
var testHookWaiting func(path string)

// Handle is a held lock. Holders are open file descriptions, not processes
// or goroutines: two Handles for the same path exclude each other even in
// one process. A Handle is not safe for concurrent use.
type Handle struct {
	path string
	f    *os.File
}

// Lock takes the exclusive lock on path, creating the file (mode 0600) and
// its parent directory (mode 0700) if needed, and waits while another holder
// has it. The lock is tried once even if ctx is already done, so cleanup code
// running under a cancelled context still gets a free lock. When ctx ends
// first the error matches both ErrLocked and ctx.Err().
func Lock(ctx context.Context, path string) (*Handle, error) {
	return lock(ctx, path, unix.LOCK_EX)
}

// LockShared takes a shared lock on path as Lock takes the exclusive one:
// any number of holders share it, and it waits while an exclusive holder
// has it; Lock waits, and TryLock is refused, while any shared holder has
// it.
func LockShared(ctx context.Context, path string) (*Handle, error) {
	return lock(ctx, path, unix.LOCK_SH)
}

func lock(ctx context.Context, path string, how int) (*Handle, error) {
	for {
		f, err := open(path)
		if err != nil {
			return nil, err
		}
		if err := wait(ctx, f, path, how); err != nil {
			f.Close()
			return nil, err
		}
		same, err := names(path, f)
		if err != nil {
			f.Close()
			return nil, err
		}
		if same {
			return &Handle{path: path, f: f}, nil
		}
		// The holder we waited for removed or replaced the file; our lock
		// is on an orphan. Start over with what path names now.
		f.Close()
	}
}

// TryLock takes the exclusive lock on path like Lock, but does not wait: if
// another holder has it, the error matches ErrLocked.
func TryLock(path string) (*Handle, error) {
	for {
		f, err := open(path)
		if err != nil {
			return nil, err
		}
		ok, err := try(f, path, unix.LOCK_EX)
		if err == nil && !ok {
			err = fmt.Errorf("lock %s: %w", path, ErrLocked)
		}
		if err != nil {
			f.Close()
			return nil, err
		}
		same, err := names(path, f)
		if err != nil {
			f.Close()
			return nil, err
		}
		if same {
			return &Handle{path: path, f: f}, nil
		}
		f.Close()
	}
}

// Path returns the path the lock was taken on.
func (h *Handle) Path() string { return h.path }

// Unlock releases the lock and leaves the file in place. Calling it again,
// or after Remove, does nothing, so `defer h.Unlock()` is always safe.
func (h *Handle) Unlock() error {
	if h.f == nil {
		return nil
	}
	// Closing the only descriptor of the open file description releases the
	// flock; an explicit LOCK_UN would add nothing.
	err := h.f.Close()
	h.f = nil
	if err != nil {
		return fmt.Errorf("unlocking %s: %w", h.path, err)
	}
	return nil
}

// Remove deletes the lock file and releases the lock. The unlink happens
// while the lock is held, which is what makes it safe: waiters notice that
// the path no longer names the file they locked and start over with a fresh
// one. The lock is released even if the unlink fails.
//
// Preconditions: every process that locks path uses this package (or the
// same inode check); a plain flock user could end up holding the orphan.
func (h *Handle) Remove() error {
	if h.f == nil {
		return fmt.Errorf("removing lock %s: %w", h.path, os.ErrClosed)
	}
	rmErr := os.Remove(h.path)
	if rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
		rmErr = fmt.Errorf("removing lock file: %w", rmErr)
	} else {
		rmErr = nil
	}
	return errors.Join(rmErr, h.Unlock())
}

func open(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating directory for lock %s: %w", path, err)
	}
	// O_CLOEXEC (set by os.OpenFile) keeps the lock from leaking into
	// children, which would otherwise hold it after we release ours.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock: %w", err)
	}
	return f, nil
}

// try attempts the lock (LOCK_EX or LOCK_SH) without blocking. ok is
// false when someone else holds it.
func try(f *os.File, path string, how int) (ok bool, err error) {
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EWOULDBLOCK):
			return false, nil
		default:
			return false, fmt.Errorf("locking %s: %w", path, err)
		}
	}
}

// wait polls try until it succeeds or ctx ends.
func wait(ctx context.Context, f *os.File, path string, how int) error {
	ok, err := try(f, path, how)
	if ok || err != nil {
		return err
	}
	if testHookWaiting != nil {
		testHookWaiting(path)
	}
	delay := minPoll
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("lock %s: %w (gave up waiting: %w)", path, ErrLocked, ctx.Err())
		case <-timer.C:
		}
		ok, err := try(f, path, how)
		if ok || err != nil {
			return err
		}
		delay = min(2*delay, maxPoll)
		timer.Reset(delay)
	}
}

// names reports whether path still names the file open as f.
func names(path string, f *os.File) (bool, error) {
	held, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("checking lock %s: %w", path, err)
	}
	now, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking lock: %w", err)
	}
	return os.SameFile(held, now), nil
}
