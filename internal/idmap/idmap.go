// Package idmap owns the host UID/GID ranges of unprivileged containers: one
// range of RangeSize IDs per container, used for both its UIDs and its GIDs
// (the container's root is Range.Start on the host). Ranges are persistent,
// are freed when the container is destroyed, and come from the IDs that
// /etc/subuid and /etc/subgid leave to nixcell. They never overlap on a
// host, whatever the instance (state directory): one registry for the whole
// host records each range with its instance and container.
//
// The pool: if both files delegate IDs to the user "nixcell", the pool is
// exactly what both delegate (their intersection), less the ID 4294967295,
// which no container can map. Otherwise it is every ID
// from 2^20 up to the top 65536-ID block (which holds the invalid ID
// 4294967295), less everything either file delegates to anyone else.
//
// This file holds the pure logic (parsing, the pool, choosing a range);
// store.go holds the persistent allocator and the registry, adopt.go the
// adoption of each instance's own allocation file of before, and
// reclaim.go the reclaiming of ranges that removed instances left.
package idmap

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nixcell/nixcell/internal/fault"
)

// RangeSize is the number of IDs of every container's range: the full 16-bit
// ID space a NixOS system expects (nobody is 65534).
const RangeSize = 65536

// User is the user whose /etc/subuid and /etc/subgid entries, if both files
// have some, delegate IDs to nixcell.
const User = "nixcell"

// The default pool, used when the subid files delegate nothing to User. It
// starts above the 100000-based ranges that useradd hands out, and stops
// before the last block so no range can contain (uid_t)-1.
const (
	defaultPoolStart = 1 << 20
	defaultPoolEnd   = 1<<32 - RangeSize
)

// ErrExhausted is matched (errors.Is) when the pool has no free range left.
var ErrExhausted = fault.New(fault.Exhausted, "no free ID range")

// Range is a block of host IDs, used for a container's UIDs and GIDs alike.
type Range struct {
	// Start is the host ID that the container's ID 0 maps to.
	Start uint32 `json:"start"`
	// Size is the number of IDs; RangeSize for every range this package hands out.
	Size uint32 `json:"size"`
}

// End is one past the last ID of r. It is a uint64 because a range may end
// at 2^32.
func (r Range) End() uint64 { return uint64(r.Start) + uint64(r.Size) }

// String gives the first and last ID, as in "1048576-1114111".
func (r Range) String() string {
	if r.Size == 0 {
		return fmt.Sprintf("%d-(empty)", r.Start)
	}
	return fmt.Sprintf("%d-%d", r.Start, r.End()-1)
}

// Contains reports whether id is in r.
func (r Range) Contains(id uint32) bool {
	return id >= r.Start && uint64(id) < r.End()
}

// span is a half-open interval of IDs; unlike Range it can hold all 2^32
// IDs, which the pool arithmetic needs.
type span struct{ lo, hi uint64 }

func (s span) String() string { return fmt.Sprintf("%d-%d", s.lo, s.hi-1) }

// subID is one line of /etc/subuid or /etc/subgid.
type subID struct {
	user string // a user name, or a numeric UID (never taken to be User)
	span
}

// parseSubIDs parses the content of a subuid(5) or subgid(5) file. file is
// only used to name it in errors.
func parseSubIDs(file string, data []byte) ([]subID, error) {
	var entries []subID
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		e, err := parseSubIDLine(line)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", file, n, err)
		}
		if e.lo < e.hi {
			entries = append(entries, e)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	return entries, nil
}

func parseSubIDLine(line string) (subID, error) {
	fields := strings.Split(line, ":")
	if len(fields) != 3 || fields[0] == "" {
		return subID{}, fmt.Errorf("%q is not NAME:START:COUNT", line)
	}
	start, err := strconv.ParseUint(fields[1], 10, 32)
	if err != nil {
		return subID{}, fmt.Errorf("start %q of %q is not a 32-bit ID", fields[1], line)
	}
	count, err := strconv.ParseUint(fields[2], 10, 32)
	if err != nil {
		return subID{}, fmt.Errorf("count %q of %q is not a 32-bit count", fields[2], line)
	}
	if start+count > 1<<32 {
		return subID{}, fmt.Errorf("%q goes past the last 32-bit ID", line)
	}
	return subID{user: fields[0], span: span{start, start + count}}, nil
}

// pool is where ranges come from.
type pool struct {
	spans []span // sorted, disjoint, not adjacent
	// align is the alignment of the ranges handed out. The default pool is
	// carved into 65536-aligned blocks; delegated IDs are used as delegated
	// (useradd's 100000:65536-style entries are not aligned, and rounding up
	// would waste most of them).
	align     uint64
	delegated bool // spans are what the subid files delegate to User
}

// newPool computes the pool from the entries of /etc/subuid and /etc/subgid.
func newPool(subuid, subgid []subID) pool {
	own := func(entries []subID) []span {
		var s []span
		for _, e := range entries {
			if e.user == User {
				s = append(s, e.span)
			}
		}
		return s
	}
	uids, gids := own(subuid), own(subgid)
	if len(uids) > 0 && len(gids) > 0 {
		// Less the ID 4294967295: the kernel maps no extent that holds it
		// (its end would wrap), so a range with it could never start.
		spans := subtract(intersect(normalize(uids), normalize(gids)), []span{{1<<32 - 1, 1 << 32}})
		return pool{spans: spans, align: 1, delegated: true}
	}
	var others []span
	for _, e := range slices.Concat(subuid, subgid) {
		if e.user != User {
			others = append(others, e.span)
		}
	}
	return pool{
		spans: subtract([]span{{defaultPoolStart, defaultPoolEnd}}, normalize(others)),
		align: RangeSize,
	}
}

// describe names the pool, computed from the files subuid and subgid, for
// an error message, with what to do when it is exhausted.
func (p pool) describe(subuid, subgid string) string {
	if p.delegated {
		return fmt.Sprintf("the IDs %s and %s both delegate to %s (%s); "+
			"delegate more or destroy unused containers", subuid, subgid, User, joinSpans(p.spans))
	}
	return fmt.Sprintf("the default pool %s less IDs delegated to other users; "+
		"delegate IDs to %s in %s and %s or destroy unused containers",
		span{defaultPoolStart, defaultPoolEnd}, User, subuid, subgid)
}

func joinSpans(spans []span) string {
	if len(spans) == 0 {
		return "none in common"
	}
	s := make([]string, len(spans))
	for i, sp := range spans {
		s[i] = sp.String()
	}
	return strings.Join(s, ", ")
}

// pick returns the lowest range of RangeSize IDs in p, aligned to p.align,
// that overlaps none of used. ok is false when there is none.
func (p pool) pick(used []Range) (r Range, ok bool) {
	for _, s := range p.spans {
		c := roundUp(s.lo, p.align)
		for c+RangeSize <= s.hi {
			// The end of the last used range overlapping the candidate,
			// past which the next candidate must start.
			var next uint64
			for _, u := range used {
				if u.End() > c && uint64(u.Start) < c+RangeSize {
					next = max(next, u.End())
				}
			}
			if next == 0 {
				return Range{Start: uint32(c), Size: RangeSize}, true
			}
			c = roundUp(next, p.align)
		}
	}
	return Range{}, false
}

func roundUp(x, align uint64) uint64 {
	return (x + align - 1) / align * align
}

// normalize sorts spans and merges those that overlap or touch.
func normalize(spans []span) []span {
	s := slices.Clone(spans)
	slices.SortFunc(s, func(a, b span) int {
		return cmp.Or(cmp.Compare(a.lo, b.lo), cmp.Compare(a.hi, b.hi))
	})
	var out []span
	for _, x := range s {
		if x.lo >= x.hi {
			continue
		}
		if n := len(out); n > 0 && x.lo <= out[n-1].hi {
			out[n-1].hi = max(out[n-1].hi, x.hi)
			continue
		}
		out = append(out, x)
	}
	return out
}

// intersect returns the IDs in both a and b, which must be normalized.
func intersect(a, b []span) []span {
	var out []span
	for i, j := 0, 0; i < len(a) && j < len(b); {
		lo, hi := max(a[i].lo, b[j].lo), min(a[i].hi, b[j].hi)
		if lo < hi {
			out = append(out, span{lo, hi})
		}
		if a[i].hi < b[j].hi {
			i++
		} else {
			j++
		}
	}
	return out
}

// subtract returns the IDs in a but not in b; both must be normalized.
func subtract(a, b []span) []span {
	var out []span
	for _, x := range a {
		for _, y := range b {
			if y.hi <= x.lo || y.lo >= x.hi {
				continue
			}
			if y.lo > x.lo {
				out = append(out, span{x.lo, y.lo})
			}
			x.lo = y.hi
			if x.lo >= x.hi {
				break
			}
		}
		if x.lo < x.hi {
			out = append(out, x)
		}
	}
	return out
}
