package fault

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
)

func TestClasses(t *testing.T) {
	notFound := New(NotFound, "no such container")
	err := fmt.Errorf("start web: %w", notFound)
	if !errors.Is(err, notFound) || !errors.Is(err, NotFound) || errors.Is(err, Exists) {
		t.Errorf("a wrapped sentinel matches itself and its class only: %v", err)
	}
	if c, ok := Of(err); !ok || c != NotFound {
		t.Errorf("Of = %q, %v", c, ok)
	}
	if _, ok := Of(errors.New("plain")); ok {
		t.Error("an error of no class has one")
	}
	full := fmt.Errorf("writing a record: %w", &os.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC})
	if c, ok := Of(full); !ok || c != Exhausted {
		t.Errorf("Of(ENOSPC) = %q, %v, want %q", c, ok, Exhausted)
	}
	if err.Error() != "start web: no such container" {
		t.Errorf("message %q", err)
	}
}
