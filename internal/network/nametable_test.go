package network

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/nixcell/nixcell/internal/spec"
)

// answersDesired runs containers of every kind of address: a (host-only
// v4 and v6), c and d (allowPeers; d with a NAT interface too), e
// (allowPeers, no IPv6) and h (allowPeers, the host's network: no address
// of nixcell's, so no name to answer and no client to know).
func answersDesired(t testing.TB) Desired {
	s, err := NewSettings("abc", testConfig)
	if err != nil {
		t.Fatal(err)
	}
	st := State{Settings: s, Addresses: map[string]Addresses{}}
	nets := map[string]spec.Network{
		"a": {}, "c": {AllowPeers: true}, "d": {AllowPeers: true, EnableNat: true},
		"e": {AllowPeers: true, NoIPv6: true}, "h": {AllowPeers: true, HostNetwork: true},
	}
	var members []Member
	for _, name := range []string{"a", "c", "d", "e", "h"} {
		a, err := s.Allocate(name, nets[name], Addresses{}, st.Addresses)
		if err != nil {
			t.Fatal(err)
		}
		st.Addresses[name] = a
		members = append(members, Member{Name: name, Network: nets[name]})
	}
	return st.Desired(members, Host{})
}

// answerClients are the clients the tests ask from: every container
// address, the bridges' own, and strangers.
func answerClients(d Desired) []netip.Addr {
	var out []netip.Addr
	for _, c := range d.Containers {
		out = append(out, c.Addresses.all()...)
	}
	h, n := d.Settings.Bridges()
	return append(out, h.IPv4.Addr(), h.IPv6.Addr(), n.IPv4.Addr(),
		netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::7"), netip.MustParseAddr("::"))
}

// TestNameTableAnswers compares the name server's answers (C, from the
// table Go writes) with the Go resolver's, byte for byte, for every name
// form, type and client: known and unknown names, any case, with and
// without the domain, allowed and denied clients, IPv4 and IPv6.
func TestNameTableAnswers(t *testing.T) {
	d := answersDesired(t)
	table, r := NameTable(d, len(d.Containers)), NewResolver(d)
	var names []string
	for _, c := range d.Containers {
		up := strings.ToUpper(c.Name)
		names = append(names, c.Name+".", up+".", c.Name+".nixcell.", up+".NixCell.", c.Name+".nixcell.example.",
			c.Name+".example.", "x."+c.Name+".nixcell.", c.Name+"x.", c.Name+"."+c.Name+".")
	}
	names = append(names, ".", "nixcell.", "nosuch.", "nosuch.nixcell.", strings.Repeat("a", 63)+".", strings.Repeat("b.", 127))
	types := []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA, dnsmessage.TypeMX, dnsmessage.TypeTXT, dnsmessage.TypeALL, dnsmessage.TypePTR}
	answered, found := 0, 0
	for _, client := range answerClients(d) {
		for _, name := range names {
			for i, typ := range types {
				query := buildQuery(t, uint16(i*7919+len(name)), name, typ, i%2 == 0, nil)
				want, err := r.Answer(query, client)
				if err != nil {
					t.Fatalf("the Go resolver on %s %v: %v", name, typ, err)
				}
				got, ok, err := answerC(table, query, client)
				if err != nil || !ok {
					t.Fatalf("%s %v from %s: no answer (%v)", name, typ, client, err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s %v from %s:\n got %x\nwant %x", name, typ, client, got, want)
				}
				answered++
				if got[3]&0xf == 0 {
					found++
				}
			}
		}
	}
	if found == 0 || found == answered {
		t.Errorf("%d of %d queries found a name: the cases do not tell anything", found, answered)
	}

	c4 := netip.MustParseAddr("10.50.0.3")
	// What resolvers add (an EDNS record) changes nothing.
	opt := dnsmessage.Resource{Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("."), Type: dnsmessage.TypeOPT, Class: 1232}, Body: &dnsmessage.OPTResource{}}
	query := buildQuery(t, 1, "d.", dnsmessage.TypeA, true, &opt)
	want, _ := r.Answer(query, c4)
	if got, ok, _ := answerC(table, query, c4); !ok || !bytes.Equal(got, want) {
		t.Errorf("a query with EDNS: %x, want %x", got, want)
	}
	// Packets the C server leaves unanswered where Go's parser answered:
	// a response, several questions, a compressed name; and those both
	// refuse.
	plain := buildQuery(t, 1, "d.", dnsmessage.TypeA, true, nil)
	label := func(n int, c byte) []byte { return append([]byte{byte(n)}, bytes.Repeat([]byte{c}, n)...) }
	question := func(labels ...[]byte) []byte {
		q := bytes.Clone(plain[:12])
		for _, l := range labels {
			q = append(q, l...)
		}
		return append(q, 0, 0, 1, 0, 1)
	}
	response := bytes.Clone(plain)
	response[2] |= 0x80
	two := bytes.Clone(plain)
	two[5] = 2
	two = append(two, plain[12:]...)
	for what, q := range map[string][]byte{
		"a response": response, "two questions": two,
		"a compressed name":     question(label(1, 'x'), []byte{0xC0, 12}),
		"a truncated header":    plain[:11],
		"a truncated question":  plain[:len(plain)-1],
		"no question":           append(bytes.Clone(plain[:4]), make([]byte, 8)...),
		"a label with a dot":    question([]byte{3, 'd', '.', 'x'}),
		"a reserved label type": question([]byte{0x41}),
		"a name of 257 bytes":   question(label(63, 'a'), label(63, 'a'), label(63, 'a'), label(63, 'a')),
	} {
		if got, ok, err := answerC(table, q, c4); ok || err != nil {
			t.Errorf("%s was answered: %x (%v)", what, got, err)
		}
	}
	// The longest name there is (255 bytes encoded) is answered.
	longest := question(label(63, 'a'), label(63, 'a'), label(63, 'a'), label(61, 'b'))
	if got, ok, _ := answerC(table, longest, c4); !ok || got[3]&0xf != 3 {
		t.Errorf("a name of 255 bytes: %x, %t; want NXDOMAIN", got, ok)
	}
}

// TestNameTableRejects: the server serves no table it does not fully
// understand.
func TestNameTableRejects(t *testing.T) {
	d := answersDesired(t)
	good := NameTable(d, 1)
	query := buildQuery(t, 1, "a.", dnsmessage.TypeA, true, nil)
	if _, ok, err := answerC(good, query, netip.MustParseAddr("10.50.0.2")); !ok || err != nil {
		t.Fatalf("the table Go wrote is refused: %v", err)
	}
	bad := func(what string, f func(b []byte) []byte) {
		t.Helper()
		if _, _, err := answerC(f(bytes.Clone(good)), query, netip.MustParseAddr("10.50.0.2")); err == nil {
			t.Errorf("a table with %s was taken", what)
		}
	}
	first := tableHeader + 4*tableListen // the first container
	bad("another version", func(b []byte) []byte { b[6] = 2; return b })
	bad("a byte less", func(b []byte) []byte { return b[:len(b)-1] })
	bad("a byte more", func(b []byte) []byte { return append(b, 0) })
	bad("more containers than it holds", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[16:], 1<<20); return b })
	bad("too many entries", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[12:], 1<<31); return b })
	bad("an upper-case name", func(b []byte) []byte { b[first+1] = 'A'; return b })
	bad("a name with a dot", func(b []byte) []byte { b[first+1] = '.'; return b })
	bad("an empty name", func(b []byte) []byte { b[first] = 0; return b })
	bad("a name longer than its length", func(b []byte) []byte { b[first+2] = 'x'; return b })
	bad("unknown flags", func(b []byte) []byte { b[first+64] = 4; return b })
	bad("a client of no container", func(b []byte) []byte { b[len(b)-4] = 99; return b })
	bad("nothing", func(b []byte) []byte { return nil })
}

// FuzzAnswer gives the name server's parser any packet from any client:
// it never crashes or reads out of bounds (go test -asan), every answer
// is a well-formed reply of at most 512 bytes equal to the Go resolver's,
// and it leaves unanswered only what Go's parser refuses or what it
// refuses on purpose (a response, not one question, a compressed name).
func FuzzAnswer(f *testing.F) {
	d := answersDesired(f)
	table, r, clients := NameTable(d, len(d.Containers)), NewResolver(d), answerClients(d)
	for i, name := range []string{"c.", "D.nixcell.", "a.", "nosuch."} {
		f.Add(buildQuery(f, uint16(i), name, dnsmessage.TypeA, true, nil), byte(i))
	}
	f.Fuzz(func(t *testing.T, query []byte, who byte) {
		client := clients[int(who)%len(clients)]
		got, ok, err := answerC(table, query, client)
		if err != nil {
			t.Fatal(err)
		}
		want, goErr := r.Answer(query, client)
		if !ok {
			if goErr == nil && !refusedOnPurpose(query) {
				t.Fatalf("no answer; Go answers %x", want)
			}
			return
		}
		if len(got) > 512 {
			t.Fatalf("a reply of %d bytes", len(got))
		}
		var m dnsmessage.Message
		if err := m.Unpack(got); err != nil {
			t.Fatalf("a malformed reply %x: %v", got, err)
		}
		if goErr != nil {
			t.Fatalf("answered %x; Go's parser refuses it: %v", got, goErr)
		}
		// Go lowers names with Unicode's rules (U+212A KELVIN SIGN is a
		// 'k' there); DNS names compare in ASCII, as the server does.
		if !bytes.Equal(got, want) && !nonASCIIQuestion(query) {
			t.Fatalf("answer %x, Go's %x", got, want)
		}
	})
}

// refusedOnPurpose tells whether the C server leaves query unanswered on
// purpose where Go's parser answers it.
func refusedOnPurpose(query []byte) bool {
	if len(query) < 12 || query[2]&0x80 != 0 || binary.BigEndian.Uint16(query[4:]) != 1 {
		return true
	}
	for off := 12; off < len(query) && query[off] != 0; off += 1 + int(query[off]) {
		if query[off] >= 0xC0 {
			return true
		}
	}
	return false
}

func nonASCIIQuestion(query []byte) bool {
	for _, b := range query[12:] {
		if b >= 0x80 {
			return true
		}
	}
	return false
}

// buildQuery is a query for name (fully qualified) of type typ, with the
// additional record extra if not nil.
func buildQuery(t testing.TB, id uint16, name string, typ dnsmessage.Type, rd bool, extra *dnsmessage.Resource) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: rd})
	if err := b.StartQuestions(); err != nil {
		t.Fatal(err)
	}
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	if extra != nil {
		if err := b.StartAdditionals(); err != nil {
			t.Fatal(err)
		}
		if err := b.OPTResource(extra.Header, *extra.Body.(*dnsmessage.OPTResource)); err != nil {
			t.Fatal(err)
		}
	}
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// FuzzNameTable gives the table's parser any bytes: it never crashes or
// reads out of bounds (go test -asan), and what it takes answers within
// 512 bytes, well-formed.
func FuzzNameTable(f *testing.F) {
	d := answersDesired(f)
	f.Add(NameTable(d, len(d.Containers)))
	f.Add(NameTable(Desired{Settings: d.Settings}, 1))
	query := buildQuery(f, 1, "c.", dnsmessage.TypeA, true, nil)
	clients := answerClients(d)
	f.Fuzz(func(t *testing.T, table []byte) {
		for _, client := range clients {
			got, ok, err := answerC(table, query, client)
			if err != nil || !ok {
				return // refused: not a table
			}
			var m dnsmessage.Message
			if len(got) > 512 || m.Unpack(got) != nil {
				t.Fatalf("a malformed reply %x", got)
			}
		}
	})
}
