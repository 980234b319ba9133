//go:build !(cgo && seccomp)

package runtime

import (
	"encoding/json"

	"golang.org/x/sys/unix"
)

// cachedSeccompProgram needs libseccomp; without it exec takes
// libcontainer's path, which refuses the filter with its own error.
func cachedSeccompProgram(string, json.RawMessage) ([]unix.SockFilter, error) {
	return nil, errUnsupported
}
