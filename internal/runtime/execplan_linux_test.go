package runtime

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/state"
	"golang.org/x/sys/unix"
)

func testPlan() *execPlan {
	return &execPlan{
		InitPid: 4242, InitStart: 123456789,
		Caps:        [3]uint64{0x1ffffffffff, 0xa80425fb, 0xa80425fb},
		Cgroup2:     "/sys/fs/cgroup/unified/nixcell/web",
		FreezerKind: 1, Freezer: "/sys/fs/cgroup/freezer/nixcell/web/freezer.state",
		Tasks:   []string{"/sys/fs/cgroup/cpu/nixcell/web/tasks", "/sys/fs/cgroup/pids/nixcell/web/tasks"},
		Keyring: "_ses.web",
		Env:     []string{"PATH=/run/current-system/sw/bin", "HOME=/root", "container=nixcell"},
		HasHome: true, Path: "/run/current-system/sw/bin", Cwd: "/",
		Filter: []unix.SockFilter{{Code: 0x20, K: 4}, {Code: 0x15, Jt: 1, Jf: 0, K: 0xc000003e}, {Code: 0x6, K: 0x7fff0000}},
	}
}

// The early path's reader (C) reads what Go writes.
func TestExecPlanRoundTrip(t *testing.T) {
	for _, p := range []*execPlan{testPlan(), func() *execPlan {
		p := testPlan()
		p.Cgroup2, p.FreezerKind, p.Freezer, p.Tasks, p.HasHome = "", 0, "", nil, false
		return p
	}()} {
		data := p.encode()
		if len(data)%8 != 0 || binary.NativeEndian.Uint32(data[8:]) != uint32(len(data)) {
			t.Fatalf("plan of %d bytes says it has %d", len(data), binary.NativeEndian.Uint32(data[8:]))
		}
		got, err := decodePlan(data)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, p) {
			t.Errorf("decoded\n%+v\nwanted\n%+v", got, p)
		}
	}
}

// Anything but a whole plan of this version is refused: the early path
// then leaves the exec to Go.
func TestExecPlanRefused(t *testing.T) {
	good := testPlan().encode()
	for i := 0; i < len(good); i++ {
		if _, err := decodePlan(good[:i]); err == nil {
			t.Fatalf("a plan cut at %d bytes of %d was read", i, len(good))
		}
	}
	mutate := map[string]func(p *execPlan) []byte{
		"version": func(p *execPlan) []byte {
			b := p.encode()
			binary.NativeEndian.PutUint32(b[4:], 2)
			return b
		},
		"magic": func(p *execPlan) []byte {
			b := p.encode()
			b[0] ^= 1
			return b
		},
		"trailing bytes": func(p *execPlan) []byte {
			b := append(p.encode(), make([]byte, 8)...)
			binary.NativeEndian.PutUint32(b[8:], uint32(len(b)))
			return b
		},
		"no filter":         func(p *execPlan) []byte { p.Filter = nil; return p.encode() },
		"relative tasks":    func(p *execPlan) []byte { p.Tasks[0] = "tasks"; return p.encode() },
		"freezer kind only": func(p *execPlan) []byte { p.Freezer = ""; return p.encode() },
		"env without =":     func(p *execPlan) []byte { p.Env[0] = "PATH"; return p.encode() },
		"NUL in a string":   func(p *execPlan) []byte { p.Cwd = "/a\x00b"; return p.encode() },
		"no pid":            func(p *execPlan) []byte { p.InitPid = 0; return p.encode() },
	}
	for name, f := range mutate {
		if _, err := decodePlan(f(testPlan())); err == nil {
			t.Errorf("%s: read", name)
		}
	}
}

// FuzzExecPlan feeds the early path's reader arbitrary bytes: it must not
// crash, and what it reads must encode back to the same bytes (nothing in
// a plan goes unchecked or unread).
func FuzzExecPlan(f *testing.F) {
	f.Add(testPlan().encode())
	p := testPlan()
	p.Tasks, p.Env = nil, nil
	f.Add(p.encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := decodePlan(data)
		if err != nil {
			return
		}
		if back := p.encode(); !bytes.Equal(back, data) {
			t.Fatalf("read %+v from %x, which encodes as %x", p, data, back)
		}
	})
}

// The early path, in C before Go starts, repeats a few of nixcell's
// names and formats: they must agree with the Go ones.
func TestExecEarlyAgreesWithGo(t *testing.T) {
	src, err := os.ReadFile("execearly_linux.c")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"DEFAULT_ROOT": strconv.Quote(state.DefaultRoot), "DEFAULT_RUN": strconv.Quote(state.DefaultRun),
		"RUN_POINTER": strconv.Quote(state.RunDirFile), "MAX_NAME": strconv.Itoa(spec.MaxNameLen),
	} {
		m := regexp.MustCompile(`(?m)^#define ` + name + ` (\S+)`).FindSubmatch(src)
		if m == nil || string(m[1]) != want {
			t.Errorf("execearly_linux.c defines %s as %q, Go has %s", name, m, want)
		}
	}
	// record_created's test of the record's phase.
	st, err := state.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Save(&state.Container{Name: "web", Phase: state.Created}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(st.Dir("web"), "container.json"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "{\n  \"name\": \"web\",\n  \"phase\": \"created\",\n"; !strings.HasPrefix(string(data), want) {
		t.Errorf("a record begins %q, the early path looks for %q", data[:min(len(data), len(want))], want)
	}
}
