package network

import (
	"net/netip"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// Domain is the DNS domain of container names: "web" and "web.nixcell."
// both name the container web.
const Domain = "nixcell"

// Resolver answers which addresses a container name has for a client at
// an address: only containers that may talk to each other see each other's
// names (both allowPeers on a shared bridge), as they could not connect
// anyway.
type Resolver struct {
	byAddr map[netip.Addr]string // container address -> container
	byName map[string]Planned
}

// NewResolver indexes the running containers of d.
func NewResolver(d Desired) *Resolver {
	r := &Resolver{byAddr: map[netip.Addr]string{}, byName: map[string]Planned{}}
	for _, c := range d.Containers {
		r.byName[c.Name] = c
		for _, a := range c.Addresses.all() {
			r.byAddr[a] = c.Name
		}
	}
	return r
}

// Lookup returns the addresses of name for a query from client.
func (r *Resolver) Lookup(name string, client netip.Addr) []netip.Addr {
	name = strings.TrimSuffix(strings.ToLower(strings.TrimSuffix(name, ".")), "."+Domain)
	target, ok := r.byName[name]
	if !ok {
		return nil
	}
	asker, ok := r.byName[r.byAddr[client.Unmap()]]
	if !ok || asker.Name != target.Name && !(asker.Network.AllowPeers && target.Network.AllowPeers) {
		return nil
	}
	var out []netip.Addr
	for _, a := range []netip.Addr{target.Addresses.HostOnly4, target.Addresses.HostOnly6} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

// Answer builds the reply to a DNS query packet from client. Names it does
// not know get NXDOMAIN: the server answers only for container names.
func (r *Resolver) Answer(query []byte, client netip.Addr) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	reply := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired})
	reply.EnableCompression()
	addrs := r.Lookup(q.Name.String(), client)
	if len(addrs) == 0 {
		reply = dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true,
			RecursionDesired: h.RecursionDesired, RCode: dnsmessage.RCodeNameError})
	}
	if err := reply.StartQuestions(); err != nil {
		return nil, err
	}
	if err := reply.Question(q); err != nil {
		return nil, err
	}
	if err := reply.StartAnswers(); err != nil {
		return nil, err
	}
	for _, a := range addrs {
		rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}
		switch {
		case q.Type == dnsmessage.TypeA && a.Is4():
			err = reply.AResource(rh, dnsmessage.AResource{A: a.As4()})
		case q.Type == dnsmessage.TypeAAAA && a.Is6():
			err = reply.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: a.As16()})
		}
		if err != nil {
			return nil, err
		}
	}
	return reply.Finish()
}
