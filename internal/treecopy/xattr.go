package treecopy

import (
	"strings"

	"github.com/nixcell/nixcell/internal/idxattr"
)

// xattr is one extended attribute of a file.
type xattr struct {
	name  string
	value []byte
}

// copiedXattr tells whether an extended attribute is copied: the user's,
// the trusted ones, file capabilities and POSIX ACLs. Other security
// attributes (SELinux labels, IMA) belong to the host's policy, not to the
// container's files.
func copiedXattr(name string) bool {
	return strings.HasPrefix(name, "user.") || strings.HasPrefix(name, "trusted.") ||
		name == idxattr.Capability || name == idxattr.ACLAccess || name == idxattr.ACLDefault
}

// shiftXattr returns the value an attribute takes in the target range;
// keep is false when it cannot be carried over (file capabilities for a
// user namespace root outside the source range), unmapped when an ID in it
// was outside the source range.
func (s Shift) shiftXattr(name string, v []byte) (out []byte, keep, unmapped bool) {
	if s.Identity() {
		return v, true, false
	}
	switch name {
	case idxattr.Capability:
		out, ok := idxattr.ShiftCapability(v, s.Map, s.To)
		return out, ok, !ok
	case idxattr.ACLAccess, idxattr.ACLDefault:
		out, unmapped = idxattr.ShiftACL(v, s.Map)
		return out, true, unmapped
	}
	return v, true, false
}
