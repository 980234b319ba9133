// Command probe makes raw system calls inside a container for nixcell's
// end-to-end tests and prints how the kernel answered each, one line per
// call: "NAME OK" or "NAME ERRNO-NAME" (EPERM, EINVAL, ...). It is built
// static (CGO_ENABLED=0) and copied into a container's root, so it needs
// nothing from the container's system.
//
// Usage:
//
//	probe syscall NR...        each call with all arguments zero
//	probe audit-socket         socket(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT)
//	probe route-socket         socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE)
//	probe ptrace PID           ptrace(PTRACE_ATTACH, PID)
//	probe setuid               its effective UID ("euid N"), then setuid(0) ("setuid OK"
//	                           or "setuid EPERM"): run setuid by a host user, it shows
//	                           whose privileges the file gave
package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe syscall NR... | audit-socket | route-socket | ptrace PID | setuid")
		os.Exit(2)
	}
	switch op, args := os.Args[1], os.Args[2:]; op {
	case "syscall":
		for _, a := range args {
			nr, err := strconv.Atoi(a)
			if err != nil {
				fmt.Fprintf(os.Stderr, "probe: %q is not a system call number\n", a)
				os.Exit(2)
			}
			// Zero arguments: every call probed is either denied by the
			// filter or harmless with null pointers and zero flags.
			r, _, errno := unix.Syscall6(uintptr(nr), 0, 0, 0, 0, 0, 0)
			report(a, errno)
			if errno == 0 && int(r) > 2 && nr != unix.SYS_GETPID {
				unix.Close(int(r)) // a descriptor, such as userfaultfd's
			}
		}
	case "audit-socket", "route-socket":
		proto := unix.NETLINK_AUDIT
		if op == "route-socket" {
			proto = unix.NETLINK_ROUTE
		}
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW, proto)
		if err == nil {
			unix.Close(fd)
		}
		report(op, errnoOf(err))
	case "ptrace":
		pid, err := strconv.Atoi(args[0])
		if err != nil {
			os.Exit(2)
		}
		err = unix.PtraceAttach(pid)
		if err == nil {
			_ = unix.PtraceDetach(pid)
		}
		report(op, errnoOf(err))
	case "setuid":
		fmt.Println("euid", unix.Geteuid())
		// The raw call: Go's syscall.Setuid changes every thread, which
		// is not what a setuid program's first call measures.
		_, _, errno := unix.RawSyscall(unix.SYS_SETUID, 0, 0, 0)
		report(op, errno)
	default:
		fmt.Fprintf(os.Stderr, "probe: unknown operation %q\n", op)
		os.Exit(2)
	}
}

func errnoOf(err error) unix.Errno {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return 0
}

func report(what string, errno unix.Errno) {
	if errno == 0 {
		fmt.Println(what, "OK")
		return
	}
	fmt.Println(what, unix.ErrnoName(errno))
}
