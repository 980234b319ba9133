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
// process of an instance (no process per container): it follows changes of
// the network state and returns when no container of the instance runs any
// more, or when ctx ends.
func (s Store) ServeDNS(ctx context.Context) error {
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
	var lastMod time.Time
	for {
		fi, err := os.Stat(s.Path)
		if os.IsNotExist(err) {
			return nil // the instance is gone
		}
		if err == nil && !fi.ModTime().Equal(lastMod) {
			lastMod = fi.ModTime()
			st, err := s.Load()
			if err != nil {
				return err
			}
			if len(st.Active) == 0 {
				return nil
			}
			resolver.Store(NewResolver(st.Desired("")))
			hostOnly, nat := st.Settings.Bridges()
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
