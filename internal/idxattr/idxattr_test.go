package idxattr

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// inRange maps [1000, 2000) to [5000, 6000).
func inRange(id uint32) (uint32, bool) {
	if id >= 1000 && id < 2000 {
		return id - 1000 + 5000, true
	}
	return id, false
}

func capability(revision uint32, size int, root uint32) []byte {
	v := make([]byte, size)
	binary.LittleEndian.PutUint32(v, revision|1) // effective
	binary.LittleEndian.PutUint32(v[4:], 1<<13)  // CAP_NET_RAW permitted
	if size == capSize3 {
		binary.LittleEndian.PutUint32(v[20:], root)
	}
	return v
}

func TestShiftCapability(t *testing.T) {
	out, ok := ShiftCapability(capability(capRevision3, capSize3, 1000), inRange, 5000)
	if !ok || !bytes.Equal(out, capability(capRevision3, capSize3, 5000)) {
		t.Errorf("revision 3 in range: %x %v", out, ok)
	}
	// The host root's capabilities become the target root's.
	out, ok = ShiftCapability(capability(capRevision2, capSize2, 0), inRange, 5000)
	if !ok || !bytes.Equal(out, capability(capRevision3, capSize3, 5000)) {
		t.Errorf("revision 2: %x %v", out, ok)
	}
	if out, ok := ShiftCapability(capability(capRevision3, capSize3, 7), inRange, 5000); ok || out != nil {
		t.Errorf("revision 3 for a root outside the range: %x %v, want not ok", out, ok)
	}
	for _, odd := range [][]byte{nil, {1, 2}, capability(capRevision3, capSize2, 0), capability(0x05000000, capSize3, 1000)} {
		if out, ok := ShiftCapability(odd, inRange, 5000); !ok || !bytes.Equal(out, odd) {
			t.Errorf("%x: %x %v, want it as it is", odd, out, ok)
		}
	}
}

func TestShiftACL(t *testing.T) {
	acl := func(user, group uint32) []byte {
		b := binary.LittleEndian.AppendUint32(nil, 2)
		for _, e := range []struct{ tag, id uint32 }{{0x01, 0xffffffff}, {aclUser, user}, {0x04, 0xffffffff}, {aclGroup, group}, {0x20, 0xffffffff}} {
			b = binary.LittleEndian.AppendUint16(b, uint16(e.tag))
			b = binary.LittleEndian.AppendUint16(b, 7)
			b = binary.LittleEndian.AppendUint32(b, e.id)
		}
		return b
	}
	if out, unmapped := ShiftACL(acl(1033, 1044), inRange); unmapped || !bytes.Equal(out, acl(5033, 5044)) {
		t.Errorf("in range: %x %v", out, unmapped)
	}
	if out, unmapped := ShiftACL(acl(1033, 44), inRange); !unmapped || !bytes.Equal(out, acl(5033, 44)) {
		t.Errorf("a group outside the range: %x %v, want it kept and unmapped", out, unmapped)
	}
	if out, unmapped := ShiftACL([]byte{2, 0, 0}, inRange); unmapped || !bytes.Equal(out, []byte{2, 0, 0}) {
		t.Errorf("malformed: %x %v", out, unmapped)
	}
}
