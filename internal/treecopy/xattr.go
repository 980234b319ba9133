package treecopy

import (
	"encoding/binary"
	"strings"
)

// xattr is one extended attribute of a file.
type xattr struct {
	name  string
	value []byte
}

// Extended attributes that hold IDs, which a shift must change.
const (
	capabilityXattr = "security.capability"
	aclAccessXattr  = "system.posix_acl_access"
	aclDefaultXattr = "system.posix_acl_default"
)

// copiedXattr tells whether an extended attribute is copied: the user's,
// the trusted ones, file capabilities and POSIX ACLs. Other security
// attributes (SELinux labels, IMA) belong to the host's policy, not to the
// container's files.
func copiedXattr(name string) bool {
	return strings.HasPrefix(name, "user.") || strings.HasPrefix(name, "trusted.") ||
		name == capabilityXattr || name == aclAccessXattr || name == aclDefaultXattr
}

// The layout of security.capability (linux/capability.h): a little-endian
// magic word whose top byte is the revision, two permitted/inheritable
// pairs, and, in revision 3, the host ID of the root of the user namespace
// the capabilities are for (rootid).
const (
	capRevisionMask = 0xff000000
	capRevision2    = 0x02000000
	capRevision3    = 0x03000000
	capSize2        = 20
	capSize3        = 24
)

// shiftXattr returns the value an attribute takes in the target range;
// keep is false when it cannot be carried over (file capabilities for a
// user namespace root outside the source range), unmapped when an ID in it
// was outside the source range.
func (s Shift) shiftXattr(name string, v []byte) (out []byte, keep, unmapped bool) {
	if s.Identity() {
		return v, true, false
	}
	switch name {
	case capabilityXattr:
		return s.shiftCapability(v)
	case aclAccessXattr, aclDefaultXattr:
		out, unmapped = s.shiftACL(v)
		return out, true, unmapped
	}
	return v, true, false
}

// shiftCapability moves file capabilities to the target range. Written by
// the container's root, they are revision 3 with rootid the source range's
// first ID, and then name the target's. Revision 2 (no rootid) means the
// host's root, which the container's root is not: they become the target
// container root's, as revision 3, which the kernel honours only inside
// that container.
func (s Shift) shiftCapability(v []byte) ([]byte, bool, bool) {
	if len(v) < 4 {
		return v, true, false
	}
	switch binary.LittleEndian.Uint32(v) & capRevisionMask {
	case capRevision2:
		if len(v) != capSize2 {
			return nil, false, false
		}
		out := make([]byte, capSize3)
		copy(out, v)
		binary.LittleEndian.PutUint32(out, binary.LittleEndian.Uint32(v)&^capRevisionMask|capRevision3)
		binary.LittleEndian.PutUint32(out[20:], s.To)
		return out, true, false
	case capRevision3:
		if len(v) != capSize3 {
			return nil, false, false
		}
		root, ok := s.Map(binary.LittleEndian.Uint32(v[20:]))
		if !ok {
			return nil, false, true
		}
		out := append([]byte(nil), v...)
		binary.LittleEndian.PutUint32(out[20:], root)
		return out, true, false
	}
	return v, true, false
}

// The layout of a POSIX ACL attribute (linux/posix_acl_xattr.h): a version
// word, then entries of a 16-bit tag, 16-bit permissions and a 32-bit ID,
// meaningful for named users and groups.
const (
	aclHeaderSize = 4
	aclEntrySize  = 8
	aclUser       = 0x02
	aclGroup      = 0x08
)

func (s Shift) shiftACL(v []byte) ([]byte, bool) {
	if len(v) < aclHeaderSize || (len(v)-aclHeaderSize)%aclEntrySize != 0 {
		return v, false
	}
	out := append([]byte(nil), v...)
	unmapped := false
	for off := aclHeaderSize; off < len(out); off += aclEntrySize {
		tag := binary.LittleEndian.Uint16(out[off:])
		if tag != aclUser && tag != aclGroup {
			continue
		}
		id, ok := s.Map(binary.LittleEndian.Uint32(out[off+4:]))
		unmapped = unmapped || !ok
		binary.LittleEndian.PutUint32(out[off+4:], id)
	}
	return out, unmapped
}
