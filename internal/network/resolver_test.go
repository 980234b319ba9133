package network

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/nixcell/nixcell/internal/spec"
)

// Resolver is the name server's answers as Go computed them before the
// server became C (nameserver.c), kept as the reference its answers are
// compared with (TestNameTableAnswers, FuzzAnswer). It answers which
// addresses a container name has for a client at an address: only
// containers that may talk to each other see each other's names (both
// allowPeers), as they could not connect anyway.
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

// peersDesired has c and d (both allowPeers) and a (not), on the host-only
// bridge: a is 10.50.0.2, c .3, d .4.
func peersDesired(t *testing.T) Desired {
	t.Helper()
	return desiredFor(t, testSettings(t), "", map[string]spec.Network{"a": {}, "c": {AllowPeers: true}, "d": {AllowPeers: true}})
}

func TestResolverLookup(t *testing.T) {
	d := peersDesired(t)
	r := NewResolver(d)
	a4, c4, d4 := netip.MustParseAddr("10.50.0.2"), netip.MustParseAddr("10.50.0.3"), netip.MustParseAddr("10.50.0.4")
	c6, d6 := netip.MustParseAddr("fd12:3456:789a:1::3"), netip.MustParseAddr("fd12:3456:789a:1::4")
	for _, q := range []struct {
		name   string
		client netip.Addr
		want   []netip.Addr
	}{
		{"d", c4, []netip.Addr{d4, d6}},
		{"D.nixcell.", c6, []netip.Addr{d4, d6}},
		{"d.nixcell", netip.AddrFrom16(c4.As16()), []netip.Addr{d4, d6}}, // IPv4-mapped
		{"c", d4, []netip.Addr{c4, c6}},
		{"a", a4, []netip.Addr{a4, netip.MustParseAddr("fd12:3456:789a:1::2")}}, // itself
		{"a", c4, nil}, // a does not allow peers
		{"c", a4, nil},
		{"c", netip.MustParseAddr("10.50.0.1"), nil}, // not a container
		{"nosuch", c4, nil},
		{"d.example.", c4, nil},
	} {
		if got := r.Lookup(q.name, q.client); !slices.Equal(got, q.want) {
			t.Errorf("%s from %s: %v, want %v", q.name, q.client, got, q.want)
		}
	}
}

func TestResolverAnswer(t *testing.T) {
	r := NewResolver(peersDesired(t))
	c4 := netip.MustParseAddr("10.50.0.3")
	for _, q := range []struct {
		name  string
		typ   dnsmessage.Type
		rcode dnsmessage.RCode
		want  []netip.Addr
	}{
		{"d.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []netip.Addr{netip.MustParseAddr("10.50.0.4")}},
		{"d.nixcell.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, []netip.Addr{netip.MustParseAddr("fd12:3456:789a:1::4")}},
		{"d.", dnsmessage.TypeMX, dnsmessage.RCodeSuccess, nil},
		{"a.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
	} {
		query := dnsQuery(t, 77, q.name, q.typ)
		reply, err := r.Answer(query, c4)
		if err != nil {
			t.Fatalf("%s: %v", q.name, err)
		}
		h, got := parseReply(t, reply)
		if h.ID != 77 || !h.Response || !h.Authoritative || !h.RecursionDesired || h.RCode != q.rcode || !slices.Equal(got, q.want) {
			t.Errorf("%s %v: header %+v, answers %v; want %v, %v", q.name, q.typ, h, got, q.rcode, q.want)
		}
	}
	if _, err := r.Answer([]byte{1, 2, 3}, c4); err == nil {
		t.Error("a truncated query was answered")
	}
}

// dnsQuery builds a query for name (fully qualified) of type typ.
func dnsQuery(t *testing.T, id uint16, name string, typ dnsmessage.Type) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	if err := b.StartQuestions(); err != nil {
		t.Fatal(err)
	}
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// parseReply returns a reply's header and the addresses it answers.
func parseReply(t *testing.T, msg []byte) (dnsmessage.Header, []netip.Addr) {
	t.Helper()
	var m dnsmessage.Message
	if err := m.Unpack(msg); err != nil {
		t.Fatalf("unpacking the reply: %v", err)
	}
	var out []netip.Addr
	for _, a := range m.Answers {
		switch b := a.Body.(type) {
		case *dnsmessage.AResource:
			out = append(out, netip.AddrFrom4(b.A))
		case *dnsmessage.AAAAResource:
			out = append(out, netip.AddrFrom16(b.AAAA))
		}
	}
	return m.Header, out
}
