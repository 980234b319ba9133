package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/testutil"
)

// TestStopAfterStart: a stop at any moment after a start returns ends
// the container cleanly, its init having got the stop signal: 104 start
// and stop pairs, the stop 0 ms to 2 s after the start, dense where the
// init is still setting itself up (issue 13: the signal is never lost). Four
// containers at once, which also loads the host as a busy one would.
func TestStopAfterStart(t *testing.T) {
	in := newInstance(t)
	system := prebuilt(t, `{ }`)
	const containers, pairs = 4, 26
	delay := func(i int) time.Duration {
		// Half of them in the first 100 ms, every 4 ms; the rest up to 2 s.
		if i < pairs/2 {
			return time.Duration(i) * 8 * time.Millisecond
		}
		return 100*time.Millisecond + time.Duration(i-pairs/2)*1900*time.Millisecond/(pairs-pairs/2)
	}
	var wg sync.WaitGroup
	errs := make(chan string, containers*pairs)
	for c := range containers {
		name := testutil.Name("stopdelay")
		in.must("create", name, "--system", system)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range pairs {
				d := delay(i) + time.Duration(c)*time.Millisecond
				if r := in.run("start", name); r.code != 0 {
					errs <- fmt.Sprintf("%s: start: %s", name, r)
					return
				}
				time.Sleep(d)
				r := in.run("stop", "--timeout", "20s", name)
				if r.code != 0 || r.stderr != "" {
					errs <- fmt.Sprintf("%s: stop %v after the start: %s", name, d, r)
				}
				if log := in.readRoot(name, "var/log/nixcell-fixture.log"); strings.Count(log, "stop signal=RTMIN+3") != i+1 {
					errs <- fmt.Sprintf("%s: stop %v after the start: the init's log shows %d stop signals, want %d",
						name, d, strings.Count(log, "stop signal=RTMIN+3"), i+1)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
