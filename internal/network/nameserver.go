package network

import (
	"context"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DNSPort is where the name server listens on each bridge address.
const DNSPort = 53

// ServeDNS answers container-name queries on port 53 of the bridges'
// addresses, for the containers on them. It is the one host-wide helper
// process of an instance (no process per container). Whenever one of the
// files in watch changes (the network state, the run table), it asks
// current for the desired network; it returns when current says nothing
// runs any more (ok false), when a watched file is gone, or when ctx ends.
func ServeDNS(ctx context.Context, watch []string, current func() (d Desired, ok bool, err error)) error {
	var resolver atomic.Pointer[Resolver]
	var mu sync.Mutex
	listening := map[netip.Addr]*net.UDPConn{}
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range listening {
			c.Close()
		}
	}()
	serve := func(c *net.UDPConn) {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if reply, err := resolver.Load().Answer(buf[:n], from.Addr()); err == nil {
				_, _ = c.WriteToUDPAddrPort(reply, from)
			}
		}
	}
	lastMod := make([]time.Time, len(watch))
	for {
		changed := false
		for i, path := range watch {
			fi, err := os.Stat(path)
			if os.IsNotExist(err) && i == 0 {
				return nil // the instance is gone
			}
			if err == nil && !fi.ModTime().Equal(lastMod[i]) {
				lastMod[i], changed = fi.ModTime(), true
			}
		}
		if changed {
			d, ok, err := current()
			if err != nil {
				return err
			}
			if !ok {
				return nil
			}
			resolver.Store(NewResolver(d))
			hostOnly, nat := d.Settings.Bridges()
			mu.Lock()
			for _, p := range []netip.Prefix{hostOnly.IPv4, hostOnly.IPv6, nat.IPv4, nat.IPv6} {
				if listening[p.Addr()] != nil {
					continue
				}
				// A bridge that does not exist yet is tried again at the
				// next change.
				if c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.Addr(), DNSPort))); err == nil {
					listening[p.Addr()] = c
					go serve(c)
				}
			}
			mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}
