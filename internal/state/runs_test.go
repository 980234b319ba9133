package state

import (
	"testing"
	"time"
)

func TestRunHolds(t *testing.T) {
	owner, init := Process{Pid: 10, StartedAt: time.Unix(1, 0)}, Process{Pid: 20, StartedAt: time.Unix(2, 0)}
	lives := func(ps ...Process) func(Process) bool {
		return func(p Process) bool {
			for _, q := range ps {
				if p == q {
					return true
				}
			}
			return false
		}
	}
	for _, c := range []struct {
		what  string
		run   Run
		alive func(Process) bool
		holds bool
	}{
		{"starting, its command lives", Run{Phase: Starting, Owner: owner}, lives(owner), true},
		{"starting, its command was killed", Run{Phase: Starting, Owner: owner}, lives(), false},
		{"starting, killed after the init was made", Run{Phase: Starting, Owner: owner, Init: init}, lives(init), true},
		{"running", Run{Phase: Running, Init: init}, lives(init), true},
		{"running, its init died on its own", Run{Phase: Running, Init: init}, lives(), false},
		{"running, its PID now another's", Run{Phase: Running, Init: init}, lives(Process{Pid: 20, StartedAt: time.Unix(9, 0)}), false},
		{"running records no owner", Run{Phase: Running, Owner: owner, Init: init}, lives(owner), false},
	} {
		if got := c.run.Holds(c.alive); got != c.holds {
			t.Errorf("%s: Holds = %v, want %v", c.what, got, c.holds)
		}
	}
}
