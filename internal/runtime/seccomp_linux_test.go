package runtime

import (
	"testing"

	"github.com/opencontainers/runc/libcontainer/configs"
	libseccomp "github.com/seccomp/libseccomp-golang"
)

// TestDeniedSyscallsAreReal catches a misspelt name, which libcontainer
// would skip without a word: every denied call must be a system call on at
// least one architecture libseccomp knows.
func TestDeniedSyscallsAreReal(t *testing.T) {
	arches := []libseccomp.ScmpArch{libseccomp.ArchAMD64, libseccomp.ArchX86, libseccomp.ArchX32,
		libseccomp.ArchARM64, libseccomp.ArchARM, libseccomp.ArchPPC64LE, libseccomp.ArchS390X}
	seen := map[string]bool{}
	for _, g := range deniedSyscalls {
		for _, name := range g.names {
			if seen[name] {
				t.Errorf("%s is listed twice", name)
			}
			seen[name] = true
			known := false
			for _, a := range arches {
				if _, err := libseccomp.GetSyscallFromNameByArch(name, a); err == nil {
					known = true
					break
				}
			}
			if !known {
				t.Errorf("%s (%s) is not a system call on any architecture", name, g.why)
			}
		}
	}
	for _, name := range []string{"kexec_load", "finit_module", "bpf", "keyctl", "open_by_handle_at", "clock_settime"} {
		if _, err := libseccomp.GetSyscallFromName(name); err != nil {
			t.Errorf("%s is unknown on this architecture: %v", name, err)
		}
	}
}

func TestSeccompFilter(t *testing.T) {
	s := seccompFilter()
	if s.DefaultAction != configs.Allow || len(s.Syscalls) < 40 {
		t.Fatalf("filter: %+v", s)
	}
	for _, c := range s.Syscalls {
		if c.Action != configs.Errno || c.ErrnoRet == nil || *c.ErrnoRet == 0 {
			t.Errorf("%s: action %v, errno %v; want an errno", c.Name, c.Action, c.ErrnoRet)
		}
	}
}

func TestCapabilityBitsCoverTheList(t *testing.T) {
	for _, c := range capabilities {
		if _, ok := capabilityBits[c]; !ok {
			t.Errorf("%s has no bit number", c)
		}
	}
	if got := grantedCapabilities(); len(got) == 0 || len(got) > len(capabilities) {
		t.Errorf("granted %v", got)
	}
}
