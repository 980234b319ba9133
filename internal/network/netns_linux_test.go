package network

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nixcell/nixcell/internal/testutil"
)

// testNS is a fresh network namespace of one test, held by an OS thread of
// its own. The thread unshares into the namespace and then only runs what
// the test gives it (do); it never goes back to the host's namespace, and
// it ends with the test, locked, so the Go runtime discards it. The
// namespace and every interface in it go with the thread. So whatever a
// test does or however it fails, the host's own network, /etc/hosts and
// nftables ruleset are never touched, and nothing needs restoring.
type testNS struct {
	t *testing.T
	// tid is the thread's ID, which stands for a container's init: netlink
	// and /proc take it as a PID.
	tid  int
	h    netns.NsHandle
	work chan func()
}

// newTestNS creates a fresh network namespace for t, with lo up; it is
// gone when t ends. It skips (fails under CI) without root.
func newTestNS(t *testing.T) *testNS {
	t.Helper()
	testutil.RequiresRoot(t)
	n := &testNS{t: t, work: make(chan func())}
	ready := make(chan error)
	go func() {
		// Never unlocked: the thread ends with this goroutine, so it never
		// runs anything else in this namespace.
		runtime.LockOSThread()
		h, err := netns.New()
		if err != nil {
			ready <- fmt.Errorf("creating a network namespace: %w", err)
			return
		}
		n.tid, n.h = unix.Gettid(), h
		if lo, err := netlink.LinkByName("lo"); err != nil {
			ready <- err
			return
		} else if err := netlink.LinkSetUp(lo); err != nil {
			ready <- err
			return
		}
		ready <- nil
		for f := range n.work {
			f()
		}
	}()
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		close(n.work)
		n.h.Close()
	})
	return n
}

// do runs f in the namespace (netlink, sockets, /proc/sys/net and the
// processes it starts all act there) and fails the test if f fails.
func (n *testNS) do(f func() error) {
	n.t.Helper()
	if err := n.try(f); err != nil {
		n.t.Fatal(err)
	}
}

// try runs f in the namespace and returns its error.
func (n *testNS) try(f func() error) error {
	errc := make(chan error)
	n.work <- func() { errc <- f() }
	return <-errc
}

// goIn runs f on another thread in the namespace, in the background (a
// server); like the namespace's own thread, that thread is discarded when
// f returns.
func (n *testNS) goIn(f func()) {
	entered := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked, as in newTestNS
		err := netns.Set(n.h)
		entered <- err
		if err == nil {
			f()
		}
	}()
	if err := <-entered; err != nil {
		n.t.Fatalf("entering the test's network namespace: %v", err)
	}
}

// cmd runs a command in the namespace and returns its output.
func (n *testNS) cmd(name string, args ...string) string {
	n.t.Helper()
	var out []byte
	n.do(func() error {
		var stderr bytes.Buffer
		c := exec.Command(name, args...)
		c.Stderr = &stderr
		var err error
		if out, err = c.Output(); err != nil {
			return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
		}
		return nil
	})
	return string(out)
}

// sysctl reads a sysctl of the namespace (path as under /proc/sys).
func (n *testNS) sysctl(path string) string {
	n.t.Helper()
	var v []byte
	n.do(func() (err error) {
		v, err = os.ReadFile("/proc/sys/" + path)
		return err
	})
	return strings.TrimSpace(string(v))
}

// link returns the namespace's interface of that name, nil if none.
func (n *testNS) link(name string) netlink.Link {
	n.t.Helper()
	var l netlink.Link
	n.do(func() error {
		var err error
		l, err = netlink.LinkByName(name)
		if _, ok := err.(netlink.LinkNotFoundError); ok {
			return nil
		}
		return err
	})
	return l
}

// addrs returns the global addresses of the namespace's interface.
func (n *testNS) addrs(name string) []string {
	n.t.Helper()
	var out []string
	n.do(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		as, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		for _, a := range as {
			if !a.IP.IsLinkLocalUnicast() {
				out = append(out, a.IPNet.String())
			}
		}
		return err
	})
	return out
}

// veth links two namespaces with a veth pair and gives each end its
// addresses (prefixes); the ends are up.
func veth(t *testing.T, a *testNS, aName string, aAddrs []string, b *testNS, bName string, bAddrs []string) {
	t.Helper()
	a.do(func() error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: aName}, PeerName: bName, PeerNamespace: netlink.NsPid(b.tid)}
		if err := netlink.LinkAdd(v); err != nil {
			return fmt.Errorf("veth %s/%s: %w", aName, bName, err)
		}
		return nil
	})
	for _, end := range []struct {
		ns    *testNS
		name  string
		addrs []string
	}{{a, aName, aAddrs}, {b, bName, bAddrs}} {
		end.ns.do(func() error {
			l, err := netlink.LinkByName(end.name)
			if err != nil {
				return err
			}
			for _, s := range end.addrs {
				a, err := netlink.ParseAddr(s)
				if err != nil {
					return err
				}
				if a.IP.To4() == nil {
					a.Flags = unix.IFA_F_NODAD // usable at once
				}
				if err := netlink.AddrAdd(l, a); err != nil {
					return fmt.Errorf("address %s on %s: %w", s, end.name, err)
				}
			}
			return netlink.LinkSetUp(l)
		})
	}
}
