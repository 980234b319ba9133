package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"

	"github.com/nixcell/nixcell/internal/atomicfile"
	"github.com/nixcell/nixcell/internal/spec"
)

// The name server (nameserver.c) knows no policy: it serves a table that
// WriteNameTable computes here from the desired network, in the layout
// nametable.h describes, and re-reads it whenever it is replaced. The
// table says where to listen (the managed bridges' addresses), which
// containers run with which addresses, and who may resolve whom: each
// container has a group, and a client (known by any of its container's
// addresses) sees a name when it is that container's or both are of one
// group other than 0. Only what was validated goes in: container names
// (spec.ValidateName) and addresses.

// Domain is the DNS domain of container names: "web" and "web.nixcell."
// both name the container web.
const Domain = "nixcell"

// DNSPort is where the name server listens on each bridge address.
const DNSPort = 53

// The table's layout; nametable.h must agree.
const (
	tableMagic     = "NXCDNS"
	tableVersion   = 1
	tableHeader    = 24
	tableListen    = 16
	tableContainer = 92
	tableClient    = 20
)

// peersGroup is the group of containers that allow peers: the firewall
// lets them talk over any bridge they share.
const peersGroup = 1

// NameTable encodes what the name server serves for d, running the
// containers of the run table (0 tells the server that nothing runs: it
// leaves).
func NameTable(d Desired, running int) []byte {
	hostOnly, nat := d.Settings.Bridges()
	var listen []netip.Addr
	for _, p := range []netip.Prefix{hostOnly.IPv4, hostOnly.IPv6, nat.IPv4, nat.IPv6} {
		if p.IsValid() {
			listen = append(listen, p.Addr())
		}
	}
	type client struct {
		addr  netip.Addr
		index int
	}
	var clients []client
	for i, c := range d.Containers {
		for _, a := range c.Addresses.all() {
			clients = append(clients, client{a, i})
		}
	}
	b := make([]byte, tableHeader, tableHeader+len(listen)*tableListen+len(d.Containers)*tableContainer+len(clients)*tableClient)
	copy(b, tableMagic)
	le := binary.LittleEndian
	le.PutUint16(b[6:], tableVersion)
	le.PutUint32(b[8:], uint32(running))
	le.PutUint32(b[12:], uint32(len(listen)))
	le.PutUint32(b[16:], uint32(len(d.Containers)))
	le.PutUint32(b[20:], uint32(len(clients)))
	for _, a := range listen {
		b = append(b, addr16(a)...)
	}
	for _, c := range d.Containers {
		var r [tableContainer]byte
		r[0] = byte(copy(r[1:64], c.Name))
		if a := c.Addresses.HostOnly4; a.Is4() {
			r[64] |= 1
			a4 := a.As4()
			copy(r[68:72], a4[:])
		}
		if a := c.Addresses.HostOnly6; a.Is6() {
			r[64] |= 2
			copy(r[72:88], addr16(a))
		}
		if c.Network.AllowPeers {
			le.PutUint32(r[88:], peersGroup)
		}
		b = append(b, r[:]...)
	}
	for _, c := range clients {
		b = append(b, addr16(c.addr)...)
		b = le.AppendUint32(b, uint32(c.index))
	}
	return b
}

// addr16 is a as 16 bytes, IPv4 as ::ffff:a.b.c.d.
func addr16(a netip.Addr) []byte {
	b := a.As16()
	return b[:]
}

// WriteNameTable replaces the name server's table at path with d's, or
// removes it when nothing runs (running is the number of containers in the
// run table, with nixcell's network or not); the server follows either.
// Preconditions: the global lock is held (the table changes with the run
// table and the network state, under that lock).
func WriteNameTable(path string, d Desired, running int) error {
	if running == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing the name server's table: %w", err)
		}
		return nil
	}
	for _, c := range d.Containers {
		if err := spec.ValidateName(c.Name); err != nil {
			return fmt.Errorf("the name server's table: %w", err)
		}
	}
	return atomicfile.WriteFile(path, NameTable(d, running), 0o600)
}
