package lockfile

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The helper process: the test binary re-executed with these variables set
// runs helperMain instead of the tests.
const (
	envHelper = "NIXCELL_LOCKFILE_HELPER" // mode: "hold" or "count"
	envPath   = "NIXCELL_LOCKFILE_PATH"
	envArg    = "NIXCELL_LOCKFILE_ARG"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envHelper); mode != "" {
		if err := helperMain(mode, os.Getenv(envPath), os.Getenv(envArg)); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func helperMain(mode, path, arg string) error {
	switch mode {
	case "hold":
		// Take the lock, say so, and on the first line of stdin release
		// it the way that line says ("unlock" or "remove").
		h, err := Lock(context.Background(), path)
		if err != nil {
			return err
		}
		fmt.Println("locked")
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil {
			return err
		}
		switch strings.TrimSpace(line) {
		case "unlock":
			return h.Unlock()
		case "remove":
			return h.Remove()
		default:
			return fmt.Errorf("unknown command %q", line)
		}
	case "count":
		n, err := strconv.Atoi(arg)
		if err != nil {
			return err
		}
		return increment(path, n)
	default:
		return fmt.Errorf("unknown helper mode %q", mode)
	}
}

// increment adds n to the counter in path+".count", one locked
// read-modify-write at a time, removing the lock file every other time. A
// lost update shows that two holders were inside at once.
func increment(path string, n int) error {
	counter := path + ".count"
	for i := range n {
		h, err := Lock(context.Background(), path)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(counter)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		v, _ := strconv.Atoi(string(data))
		if err := os.WriteFile(counter, []byte(strconv.Itoa(v+1)), 0o600); err != nil {
			return err
		}
		if i%2 == 0 {
			err = h.Remove()
		} else {
			err = h.Unlock()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func helperCmd(t *testing.T, mode, path, arg string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// GORACE: a race-enabled binary otherwise sleeps a second at exit.
	cmd.Env = append(os.Environ(), envHelper+"="+mode, envPath+"="+path, envArg+"="+arg,
		"GORACE=atexit_sleep_ms=0")
	cmd.Stderr = os.Stderr
	return cmd
}

// holder is a child process holding a lock.
type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// startHolder starts a child process and returns once it holds the lock on
// path.
func startHolder(t *testing.T, path string) *holder {
	t.Helper()
	cmd := helperCmd(t, "hold", path, "")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &holder{cmd: cmd, stdin: stdin}
	t.Cleanup(func() {
		if h.cmd.ProcessState == nil {
			h.cmd.Process.Kill()
			h.cmd.Wait()
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("helper said %q, %v; want \"locked\"", line, err)
	}
	return h
}

// release tells the child to unlock or remove, and waits for it to exit.
func (h *holder) release(t *testing.T, how string) {
	t.Helper()
	if _, err := io.WriteString(h.stdin, how+"\n"); err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
}

// lockAsync starts Lock in a goroutine and returns once that goroutine waits
// on a lock someone else holds.
func lockAsync(t *testing.T, ctx context.Context, path string) <-chan result {
	t.Helper()
	waiting := make(chan struct{})
	var once sync.Once
	testHookWaiting = func(string) { once.Do(func() { close(waiting) }) }
	t.Cleanup(func() { testHookWaiting = nil })
	res := make(chan result, 1)
	go func() {
		h, err := Lock(ctx, path)
		res <- result{h, err}
	}()
	select {
	case <-waiting:
	case r := <-res:
		t.Fatalf("Lock returned %v, %v without waiting", r.h, r.err)
	}
	return res
}

type result struct {
	h   *Handle
	err error
}

// mustHold asserts that h is a lock on the file path names now: another
// TryLock fails and the path and the descriptor are the same file.
func mustHold(t *testing.T, h *Handle, path string) {
	t.Helper()
	if !sameFile(t, h, path) {
		t.Fatalf("the lock is not on the file %s names", path)
	}
	other, err := TryLock(path)
	if !errors.Is(err, ErrLocked) {
		if other != nil {
			other.Unlock()
		}
		t.Fatalf("TryLock on a held lock: %v, want ErrLocked", err)
	}
}

func sameFile(t *testing.T, h *Handle, path string) bool {
	t.Helper()
	ok, err := names(path, h.f)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func receive(t *testing.T, res <-chan result) *Handle {
	t.Helper()
	select {
	case r := <-res:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.h
	case <-time.After(10 * time.Second):
		t.Fatal("waiter never got the lock")
		return nil
	}
}

func TestLockCreatesFileAndDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "locks")
	path := filepath.Join(dir, "global.lock")
	h, err := Lock(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Unlock()
	if h.Path() != path {
		t.Errorf("Path() = %q, want %q", h.Path(), path)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("lock directory mode %v, want 0700", fi.Mode().Perm())
	}
	mustHold(t, h, path)
}

func TestTryLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.lock")
	a, err := TryLock(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = TryLock(path)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second TryLock: %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name %s", err, path)
	}
	if err := a.Unlock(); err != nil {
		t.Fatal(err)
	}
	b, err := TryLock(path)
	if err != nil {
		t.Fatalf("TryLock after Unlock: %v", err)
	}
	b.Unlock()
}

// TestLockShared: shared holders share; an exclusive TryLock is refused
// while any holds it, and a shared lock waits for an exclusive holder.
func TestLockShared(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "a.lock")
	a, err := LockShared(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LockShared(ctx, path)
	if err != nil {
		t.Fatalf("second LockShared while one is held: %v", err)
	}
	for _, h := range []*Handle{a, b} {
		if _, err := TryLock(path); !errors.Is(err, ErrLocked) {
			t.Fatalf("TryLock with a shared holder: %v, want ErrLocked", err)
		}
		if err := h.Unlock(); err != nil {
			t.Fatal(err)
		}
	}
	x, err := TryLock(path)
	if err != nil {
		t.Fatalf("TryLock once the shared holders are gone: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := LockShared(short, path); !errors.Is(err, ErrLocked) {
		t.Fatalf("LockShared with an exclusive holder: %v, want ErrLocked", err)
	}
	if err := x.Unlock(); err != nil {
		t.Fatal(err)
	}
	c, err := LockShared(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	c.Unlock()
}

func TestUnlockTwice(t *testing.T) {
	h, err := Lock(context.Background(), filepath.Join(t.TempDir(), "a.lock"))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := h.Unlock(); err != nil {
		t.Fatalf("second Unlock: %v", err)
	}
	if err := h.Remove(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Remove after Unlock: %v, want os.ErrClosed", err)
	}
}

func TestLockWaitsForGoroutine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.lock")
	a, err := Lock(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	res := lockAsync(t, context.Background(), path)
	select {
	case r := <-res:
		t.Fatalf("second Lock returned %v, %v while the first is held", r.h, r.err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := a.Unlock(); err != nil {
		t.Fatal(err)
	}
	b := receive(t, res)
	defer b.Unlock()
	mustHold(t, b, path)
}

func TestLockWaitsForProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.lock")
	child := startHolder(t, path)

	if _, err := TryLock(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("TryLock while a child holds the lock: %v, want ErrLocked", err)
	}
	res := lockAsync(t, context.Background(), path)
	select {
	case r := <-res:
		t.Fatalf("Lock returned %v, %v while a child holds the lock", r.h, r.err)
	case <-time.After(100 * time.Millisecond):
	}
	child.release(t, "unlock")
	h := receive(t, res)
	defer h.Unlock()
	mustHold(t, h, path)
}

func TestLockReleasedWhenHolderDies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.lock")
	child := startHolder(t, path)
	res := lockAsync(t, context.Background(), path)
	if err := child.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	child.cmd.Wait()
	h := receive(t, res)
	defer h.Unlock()
	mustHold(t, h, path)
}

func TestLockContextTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.lock")
	child := startHolder(t, path)
	defer child.release(t, "unlock")

	const timeout = 100 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	h, err := Lock(ctx, path)
	if err == nil {
		h.Unlock()
		t.Fatal("Lock succeeded while a child holds the lock")
	}
	if elapsed := time.Since(start); elapsed < timeout {
		t.Errorf("Lock gave up after %v, before the %v timeout", elapsed, timeout)
	}
	if !errors.Is(err, ErrLocked) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want ErrLocked and context.DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name %s", err, path)
	}
}

func TestLockCancelledContextTakesFreeLock(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	path := filepath.Join(t.TempDir(), "a.lock")
	h, err := Lock(ctx, path)
	if err != nil {
		t.Fatalf("Lock of a free lock under a cancelled context: %v", err)
	}
	h.Unlock()

	child := startHolder(t, path)
	defer child.release(t, "unlock")
	if _, err := Lock(ctx, path); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock of a held lock under a cancelled context: %v, want context.Canceled", err)
	}
}

func TestRemoveWithGoroutineWaiting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.lock")
	a, err := Lock(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	res := lockAsync(t, context.Background(), path)
	if err := a.Remove(); err != nil {
		t.Fatal(err)
	}
	b := receive(t, res)
	defer b.Unlock()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the waiter's lock file is not on disk: %v", err)
	}
	mustHold(t, b, path)
}

func TestRemoveWithProcessWaiting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.lock")
	child := startHolder(t, path)
	res := lockAsync(t, context.Background(), path)
	child.release(t, "remove")
	h := receive(t, res)
	defer h.Unlock()
	mustHold(t, h, path)
}

// TestMutualExclusion has goroutines and processes increment a shared
// counter under the lock, removing the lock file half of the time; any
// overlap of two holders loses an update.
func TestMutualExclusion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.lock")
	const procs, goroutines, each = 3, 4, 30

	var inside atomic.Int32
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for i := range each {
				h, err := Lock(context.Background(), path)
				if err != nil {
					t.Error(err)
					return
				}
				if n := inside.Add(1); n != 1 {
					t.Errorf("%d goroutines hold the lock at once", n)
				}
				counter := path + ".count"
				data, err := os.ReadFile(counter)
				if err != nil && !errors.Is(err, os.ErrNotExist) {
					t.Error(err)
				}
				v, _ := strconv.Atoi(string(data))
				if err := os.WriteFile(counter, []byte(strconv.Itoa(v+1)), 0o600); err != nil {
					t.Error(err)
				}
				inside.Add(-1)
				if i%3 == 0 {
					err = h.Remove()
				} else {
					err = h.Unlock()
				}
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
	for range procs {
		cmd := helperCmd(t, "count", path, strconv.Itoa(each))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := cmd.Wait(); err != nil {
				t.Errorf("helper: %v", err)
			}
		})
	}
	wg.Wait()

	data, err := os.ReadFile(path + ".count")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(data), strconv.Itoa((procs+goroutines)*each); got != want {
		t.Fatalf("counter = %s, want %s: two holders overlapped", got, want)
	}
}
