package network

import (
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/nixcell/nixcell/internal/spec"
)

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
