//go:build failpoints

package failpoint

import (
	"os"
	"strings"
	"syscall"
)

// Hit marks the step name: it records it in the trace, and fails or kills
// the process there when the test asked for it.
func Hit(name string) error {
	if trace := os.Getenv("NIXCELL_FAILPOINT_TRACE"); trace != "" {
		if f, err := os.OpenFile(trace, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
			_, _ = f.WriteString(name + "\n")
			f.Close()
		}
	}
	want, action, _ := strings.Cut(os.Getenv("NIXCELL_FAILPOINT"), ":")
	if want != name {
		return nil
	}
	if action == "kill" {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // never returns
	}
	return &ErrInjected{Step: name}
}
