package fault

import (
	"errors"
	"fmt"
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
	if err.Error() != "start web: no such container" {
		t.Errorf("message %q", err)
	}
}
