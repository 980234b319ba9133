package trace

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestTrace: a mark prints the phase since the previous mark, a phase
// beside prints its own duration without ending the current phase, Done
// prints the total, and a nil trace prints nothing.
func TestTrace(t *testing.T) {
	var out bytes.Buffer
	tr := New(&out)
	end := tr.Beside("network")
	time.Sleep(20 * time.Millisecond)
	tr.Mark("first")
	time.Sleep(20 * time.Millisecond)
	end()
	time.Sleep(20 * time.Millisecond)
	tr.Mark("second")
	tr.Done()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	// Sleeps give lower bounds only: each phase lasts at least that long.
	want := []struct {
		name string
		min  float64
	}{{"first", 20}, {"network (beside)", 40}, {"second", 40}, {"total", 60}}
	if len(lines) != len(want) {
		t.Fatalf("trace printed:\n%s", out.String())
	}
	re := regexp.MustCompile(`^trace: (.*?)\s+([0-9.]+) ms$`)
	for i, w := range want {
		m := re.FindStringSubmatch(lines[i])
		if m == nil || m[1] != w.name {
			t.Fatalf("line %d is %q, want the phase %q", i, lines[i], w.name)
		}
		var ms float64
		if _, err := fmt.Sscan(m[2], &ms); err != nil || ms < w.min {
			t.Errorf("%s took %s ms, want at least %v", w.name, m[2], w.min)
		}
	}

	var none *Trace
	none.Mark("x")
	none.Beside("y")()
	none.Done()
}
