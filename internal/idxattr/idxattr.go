// Package idxattr owns the extended attributes that name user and group
// IDs, file capabilities and POSIX ACLs: their layouts, and moving the IDs
// in them from one range to another. hostfs (owners shifted in place) and
// treecopy (owners shifted in a copy) both carry them this way.
package idxattr

import "encoding/binary"

// The attributes that name IDs.
const (
	Capability = "security.capability"
	ACLAccess  = "system.posix_acl_access"
	ACLDefault = "system.posix_acl_default"
)

// MapID returns the ID id becomes, and whether id was in the range moved.
type MapID func(id uint32) (uint32, bool)

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

// ShiftCapability returns file capabilities v for the target range. A
// revision 3 value, written by a container's root, names that root: the
// ID is mapped. A revision 2 value means the host's root, which no
// container root is: it becomes revision 3 for targetRoot, the target
// container's root, so that the kernel honours it only inside that
// container. ok is false when its root is outside the range (out is then
// nil). A value of another revision or size, which the kernel does not
// honour, is returned as it is.
func ShiftCapability(v []byte, mapID MapID, targetRoot uint32) (out []byte, ok bool) {
	if len(v) < 4 {
		return v, true
	}
	magic := binary.LittleEndian.Uint32(v)
	switch magic & capRevisionMask {
	case capRevision2:
		if len(v) != capSize2 {
			return v, true
		}
		out = make([]byte, capSize3)
		copy(out, v)
		binary.LittleEndian.PutUint32(out, magic&^capRevisionMask|capRevision3)
		binary.LittleEndian.PutUint32(out[20:], targetRoot)
		return out, true
	case capRevision3:
		if len(v) != capSize3 {
			return v, true
		}
		root, ok := mapID(binary.LittleEndian.Uint32(v[20:]))
		if !ok {
			return nil, false
		}
		out = append([]byte(nil), v...)
		binary.LittleEndian.PutUint32(out[20:], root)
		return out, true
	}
	return v, true
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

// ShiftACL returns the ACL v with its named users and groups mapped, each
// to what mapID gives; unmapped tells that one was outside the range. A
// malformed ACL, which the kernel refuses, is returned as it is.
func ShiftACL(v []byte, mapID MapID) (out []byte, unmapped bool) {
	if len(v) < aclHeaderSize || (len(v)-aclHeaderSize)%aclEntrySize != 0 {
		return v, false
	}
	out = append([]byte(nil), v...)
	for off := aclHeaderSize; off < len(out); off += aclEntrySize {
		tag := binary.LittleEndian.Uint16(out[off:])
		if tag != aclUser && tag != aclGroup {
			continue
		}
		id, ok := mapID(binary.LittleEndian.Uint32(out[off+4:]))
		unmapped = unmapped || !ok
		binary.LittleEndian.PutUint32(out[off+4:], id)
	}
	return out, unmapped
}
