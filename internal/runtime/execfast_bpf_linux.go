//go:build cgo && seccomp

package runtime

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/opencontainers/runc/libcontainer/configs"
	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// seccompCacheFile is the compiled filter kept with a running container's
// runtime state (root's, on a tmpfs, removed with it): compiling costs
// ~0.8 ms, a tenth of an exec.
const seccompCacheFile = "nixcell-exec-seccomp.bpf"

// cachedSeccompProgram returns the program for the recorded filter raw,
// compiled once per container and libseccomp version.
func cachedSeccompProgram(dir string, raw json.RawMessage) ([]unix.SockFilter, error) {
	major, minor, micro := libseccomp.GetLibraryVersion()
	key := sha256.Sum256(append(fmt.Appendf(nil, "%d.%d.%d\n", major, minor, micro), raw...))
	path := filepath.Join(dir, seccompCacheFile)
	const insn = int(unsafe.Sizeof(unix.SockFilter{}))
	if data, err := os.ReadFile(path); err == nil && len(data) > len(key) && (len(data)-len(key))%insn == 0 && bytes.Equal(data[:len(key)], key[:]) {
		prog := make([]unix.SockFilter, (len(data)-len(key))/insn)
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), len(data)-len(key)), data[len(key):])
		return prog, nil
	}
	var s configs.Seccomp
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("loading runtime state: %w", err)
	}
	prog, err := seccompProgram(&s)
	if err != nil {
		return nil, err
	}
	data := append(key[:], unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), len(prog)*insn)...)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err == nil {
		_ = os.Rename(tmp, path) // a cache: the next exec compiles again if this fails
	}
	return prog, nil
}

// seccompProgram compiles a container's recorded seccomp configuration into
// the BPF program libcontainer's exec loads for it: the same libseccomp
// calls in the same order as runc's seccomp.InitSeccomp, exported and
// passed through x/net/bpf as runc's patchbpf does. runc prepends nothing
// to a filter whose default action allows, and loads it without flags.
// What this does not implement is refused, so that exec takes
// libcontainer's path instead; TestExecFastSameAsLibcontainer compares the
// programs the kernel holds for both paths.
func seccompProgram(s *configs.Seccomp) ([]unix.SockFilter, error) {
	if s.DefaultAction != configs.Allow || len(s.Flags) > 0 || s.ListenerPath != "" || s.DefaultErrnoRet != nil {
		return nil, errUnsupported
	}
	filter, err := libseccomp.NewFilter(libseccomp.ActAllow)
	if err != nil {
		return nil, fmt.Errorf("creating seccomp filter: %w", err)
	}
	defer filter.Release()
	for _, arch := range s.Architectures {
		a, err := libseccomp.GetArchFromString(arch)
		if err != nil {
			return nil, fmt.Errorf("seccomp architecture %s: %w", arch, err)
		}
		if err := filter.AddArch(a); err != nil {
			return nil, fmt.Errorf("seccomp architecture %s: %w", arch, err)
		}
	}
	if len(s.Syscalls) > 32 {
		_ = filter.SetOptimize(2) // as runc: older libseccomp lacks it
	}
	if err := filter.SetNoNewPrivsBit(false); err != nil {
		return nil, err
	}
	for _, call := range s.Syscalls {
		if err := addSeccompRule(filter, call); err != nil {
			return nil, err
		}
	}
	prog, err := exportBPF(filter)
	if err == nil && len(prog) == 0 {
		err = errUnsupported
	}
	return prog, err
}

// addSeccompRule is runc's matchCall for the actions and conditions
// nixcell's filter uses.
func addSeccompRule(filter *libseccomp.ScmpFilter, call *configs.Syscall) error {
	if call == nil || call.Name == "" {
		return errUnsupported
	}
	var act libseccomp.ScmpAction
	switch call.Action {
	case configs.Allow:
		return nil // the default action: runc skips it
	case configs.Errno:
		act = libseccomp.ActErrno.SetReturnCode(int16(unix.EPERM))
		if call.ErrnoRet != nil {
			act = libseccomp.ActErrno.SetReturnCode(int16(*call.ErrnoRet))
		}
	default:
		return errUnsupported
	}
	nr, err := libseccomp.GetSyscallFromName(call.Name)
	if err != nil {
		return nil // unknown to this libseccomp: runc ignores it too
	}
	if len(call.Args) == 0 {
		return filter.AddRule(nr, act)
	}
	var conds []libseccomp.ScmpCondition
	seen := map[uint]bool{}
	for _, a := range call.Args {
		if a.Op != configs.EqualTo || seen[a.Index] {
			return errUnsupported
		}
		seen[a.Index] = true
		c, err := libseccomp.MakeCondition(a.Index, libseccomp.CompareEqual, a.Value, a.ValueTwo)
		if err != nil {
			return err
		}
		conds = append(conds, c)
	}
	return filter.AddRuleConditional(nr, act, conds)
}

// exportBPF returns the filter's program as runc's patchbpf rebuilds it:
// exported, disassembled and assembled again.
func exportBPF(filter *libseccomp.ScmpFilter) ([]unix.SockFilter, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var buf bytes.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(&buf, r)
		done <- err
	}()
	err = filter.ExportBPF(w)
	w.Close()
	if cerr := <-done; err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("exporting seccomp filter: %w", err)
	}
	raw := make([]bpf.RawInstruction, buf.Len()/8)
	if err := binary.Read(&buf, binary.NativeEndian, raw); err != nil {
		return nil, fmt.Errorf("reading seccomp filter: %w", err)
	}
	insns, ok := bpf.Disassemble(raw)
	if !ok {
		return nil, errors.New("seccomp filter: cannot disassemble the exported program")
	}
	asm, err := bpf.Assemble(insns)
	if err != nil {
		return nil, fmt.Errorf("seccomp filter: %w", err)
	}
	prog := make([]unix.SockFilter, len(asm))
	for i, in := range asm {
		prog[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	return prog, nil
}
