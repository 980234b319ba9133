package idmap

import (
	"slices"
	"strings"
	"testing"
)

const (
	m    = RangeSize
	top  = 1 << 32
	base = defaultPoolStart
)

func TestRange(t *testing.T) {
	tests := []struct {
		r       Range
		end     uint64
		str     string
		in, out []uint32
	}{
		{Range{100000, 65536}, 165536, "100000-165535", []uint32{100000, 165535}, []uint32{99999, 165536, 0}},
		{Range{top - m, m}, top, "4294901760-4294967295", []uint32{top - m, top - 1}, []uint32{top - m - 1}},
		{Range{0, 1}, 1, "0-0", []uint32{0}, []uint32{1}},
		{Range{5, 0}, 5, "5-(empty)", nil, []uint32{4, 5, 6}},
	}
	for _, tt := range tests {
		if got := tt.r.End(); got != tt.end {
			t.Errorf("%#v.End() = %d, want %d", tt.r, got, tt.end)
		}
		if got := tt.r.String(); got != tt.str {
			t.Errorf("%#v.String() = %q, want %q", tt.r, got, tt.str)
		}
		for _, id := range tt.in {
			if !tt.r.Contains(id) {
				t.Errorf("%v does not contain %d", tt.r, id)
			}
		}
		for _, id := range tt.out {
			if tt.r.Contains(id) {
				t.Errorf("%v contains %d", tt.r, id)
			}
		}
	}
}

func TestParseSubIDs(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		want    []subID
		wantErr string // substring; empty means no error
	}{
		{name: "empty"},
		{
			name: "entries",
			data: "root:100000:65536\n\n  # comment\nnixcell:1048576:131072\n1000:200000:10\n",
			want: []subID{
				{"root", span{100000, 165536}},
				{"nixcell", span{1048576, 1179648}},
				{"1000", span{200000, 200010}},
			},
		},
		{name: "no final newline", data: "a:1:2", want: []subID{{"a", span{1, 3}}}},
		{name: "surrounding space", data: " a:1:2 \r\n", want: []subID{{"a", span{1, 3}}}},
		{name: "empty count dropped", data: "a:1:0\n"},
		{name: "up to the top", data: "a:4294901760:65536", want: []subID{{"a", span{top - m, top}}}},
		{name: "two fields", data: "ok:1:1\nroot:100000\n", wantErr: "subuid line 2: "},
		{name: "four fields", data: "root:1:2:3", wantErr: "subuid line 1: "},
		{name: "empty name", data: ":1:2", wantErr: "subuid line 1: "},
		{name: "non-numeric start", data: "a:x:2", wantErr: `start "x"`},
		{name: "negative count", data: "a:1:-2", wantErr: `count "-2"`},
		{name: "start too big", data: "a:4294967296:1", wantErr: "subuid line 1: "},
		{name: "past the top", data: "\na:4294967295:2", wantErr: "subuid line 2: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSubIDs("/etc/subuid", []byte(tt.data))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNewPool(t *testing.T) {
	tests := []struct {
		name           string
		subuid, subgid []subID
		want           []span
		delegated      bool
	}{
		{
			name: "no entries",
			want: []span{{base, top - m}},
		},
		{
			name:   "others below the default pool",
			subuid: []subID{{"root", span{100000, 165536}}, {"alice", span{165536, 231072}}},
			subgid: []subID{{"root", span{100000, 165536}}},
			want:   []span{{base, top - m}},
		},
		{
			name:   "others inside the default pool, from either file",
			subuid: []subID{{"alice", span{base + 10, base + 20}}, {"1000", span{2 * base, 3 * base}}},
			subgid: []subID{{"bob", span{base + 15, base + m}}, {"carol", span{top - 2*m, top}}},
			want:   []span{{base, base + 10}, {base + m, 2 * base}, {3 * base, top - 2*m}},
		},
		{
			name:      "delegated in both",
			subuid:    []subID{{"root", span{100000, 165536}}, {"nixcell", span{165536, 362144}}},
			subgid:    []subID{{"nixcell", span{165536, 362144}}},
			want:      []span{{165536, 362144}},
			delegated: true,
		},
		{
			name:      "delegated: intersection of several lines",
			subuid:    []subID{{"nixcell", span{1000, 2000}}, {"nixcell", span{2000, 3000}}, {"nixcell", span{5000, 6000}}},
			subgid:    []subID{{"nixcell", span{1500, 5500}}},
			want:      []span{{1500, 3000}, {5000, 5500}},
			delegated: true,
		},
		{
			name:      "delegated ranges that do not meet",
			subuid:    []subID{{"nixcell", span{1000, 2000}}},
			subgid:    []subID{{"nixcell", span{3000, 4000}}},
			delegated: true,
		},
		{
			name:   "delegated in one file only: default pool, own entry not avoided",
			subuid: []subID{{"nixcell", span{base, 2 * base}}, {"alice", span{2 * base, 2*base + m}}},
			want:   []span{{base, 2 * base}, {2*base + m, top - m}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPool(tt.subuid, tt.subgid)
			if !slices.Equal(p.spans, tt.want) || p.delegated != tt.delegated {
				t.Fatalf("pool = %v (delegated %v), want %v (delegated %v)", p.spans, p.delegated, tt.want, tt.delegated)
			}
			if tt.delegated && p.align != 1 || !tt.delegated && p.align != RangeSize {
				t.Fatalf("align = %d", p.align)
			}
		})
	}
}

func TestPick(t *testing.T) {
	def := pool{spans: []span{{base, top - m}}, align: m}
	tests := []struct {
		name string
		pool pool
		used []Range
		want Range
		ok   bool
	}{
		{name: "first", pool: def, want: Range{base, m}, ok: true},
		{
			name: "after used",
			pool: def,
			used: []Range{{base + m, m}, {base, m}},
			want: Range{base + 2*m, m}, ok: true,
		},
		{
			name: "lowest gap",
			pool: def,
			used: []Range{{base, m}, {base + 2*m, m}},
			want: Range{base + m, m}, ok: true,
		},
		{
			name: "aligned after an unaligned used range",
			pool: def,
			used: []Range{{base + 10, 5}},
			want: Range{base + m, m}, ok: true,
		},
		{
			name: "unaligned span start rounds up",
			pool: pool{spans: []span{{base + 1, base + 3*m}}, align: m},
			want: Range{base + m, m}, ok: true,
		},
		{
			name: "span too small once aligned",
			pool: pool{spans: []span{{base + 1, base + 2*m - 1}, {5 * base, 6 * base}}, align: m},
			want: Range{5 * base, m}, ok: true,
		},
		{
			name: "the last range of the pool",
			pool: def,
			used: []Range{{base, uint32(top - 2*m - base)}},
			want: Range{top - 2*m, m}, ok: true,
		},
		{
			name: "full",
			pool: def,
			used: []Range{{base, uint32(top - m - base)}},
		},
		{
			name: "delegated, unaligned, packed",
			pool: pool{spans: []span{{165536, 165536 + 3*m}}, align: 1, delegated: true},
			used: []Range{{165536, m}},
			want: Range{165536 + m, m}, ok: true,
		},
		{
			name: "delegated, exhausted",
			pool: pool{spans: []span{{165536, 165536 + 2*m - 1}}, align: 1, delegated: true},
			used: []Range{{165536, m}},
		},
		{name: "empty pool", pool: pool{align: 1, delegated: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.pool.pick(tt.used)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("pick = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}
