// Package spec owns what a container is declared to be: the rules for its
// name and the typed settings read from its nixcloud-container style
// configuration. Everything here is pure: parsing and validation make no
// system calls and give the same answer on any host.
package spec

import (
	"fmt"

	"github.com/nixcell/nixcell/internal/fault"
)

// MaxNameLen keeps a name usable as a DNS label and a host name.
const MaxNameLen = 63

// ErrInvalidName is the class of every name validation error.
var ErrInvalidName = fault.New(fault.Usage, "invalid container name")

// ValidateName checks that name can be a container name: a DNS label of
// lower-case letters, digits and inner hyphens, starting with a letter. The
// name becomes a directory, a host name, a Nix profile path and a cgroup, so
// nothing that could walk a path ("..", "/") or need quoting is allowed.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: the name is empty", ErrInvalidName)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w %q: longer than %d characters", ErrInvalidName, name, MaxNameLen)
	case name[0] < 'a' || name[0] > 'z':
		return fmt.Errorf("%w %q: must start with a lower-case letter", ErrInvalidName, name)
	case name[len(name)-1] == '-':
		return fmt.Errorf("%w %q: must not end with '-'", ErrInvalidName, name)
	case name == "localhost":
		// Container names are published in the host's hosts file.
		return fmt.Errorf("%w %q: it names the host itself (RFC 6761); choose another", ErrInvalidName, name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%w %q: %q is not allowed (use a-z, 0-9 and '-')", ErrInvalidName, name, c)
		}
	}
	return nil
}
