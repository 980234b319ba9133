// Package doctor owns the named checks of whether this host can run
// nixcell's containers: each check says what it found and, when it fails,
// how to fix it. `nixcell doctor` runs them (with the checks of an
// instance's leftovers, which package cell adds), the Nomad driver's
// fingerprint reports them, and the tests skip on them, so a test's skip
// message and doctor always agree.
package doctor

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Status is how a check came out.
type Status string

const (
	OK   Status = "ok"
	Warn Status = "warn" // works, but something is missing or worth knowing
	Fail Status = "fail" // containers cannot run (or this kind cannot) until it is fixed
)

// Result is one check's outcome.
type Result struct {
	Check  string `json:"check"`
	Status Status `json:"status"`
	// Found is what the check saw, in a phrase.
	Found string `json:"found"`
	// Fix says what to do; empty when there is nothing to do.
	Fix string `json:"fix,omitempty"`
	// Fixable is true when `doctor --fix` repairs it.
	Fixable bool `json:"fixable,omitempty"`
}

// Check is a named check.
type Check struct {
	Name string
	Run  func() Result
}

// Run runs checks in order.
func Run(checks []Check) []Result {
	out := make([]Result, 0, len(checks))
	for _, c := range checks {
		r := c.Run()
		r.Check = c.Name
		out = append(out, r)
	}
	return out
}

// Failed tells whether any result failed.
func Failed(results []Result) bool {
	for _, r := range results {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

// Find runs the named check of checks; ok is false when there is none.
func Find(checks []Check, name string) (Result, bool) {
	for _, c := range checks {
		if c.Name == name {
			r := c.Run()
			r.Check = name
			return r, true
		}
	}
	return Result{}, false
}

func ok(format string, args ...any) Result {
	return Result{Status: OK, Found: fmt.Sprintf(format, args...)}
}

func warn(fix, format string, args ...any) Result {
	return Result{Status: Warn, Found: fmt.Sprintf(format, args...), Fix: fix}
}

func fail(fix, format string, args ...any) Result {
	return Result{Status: Fail, Found: fmt.Sprintf(format, args...), Fix: fix}
}

// Commands is the check called name that each program is on $PATH;
// install names the package or step that provides them.
func Commands(name, install string, names ...string) Check {
	return Check{Name: name, Run: func() Result {
		var missing []string
		for _, n := range names {
			if _, err := exec.LookPath(n); err != nil {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 {
			return fail(install, "%s not installed", strings.Join(missing, ", "))
		}
		return ok("%s installed", strings.Join(names, ", "))
	}}
}

// Root checks that nixcell runs as root.
var Root = Check{Name: "root", Run: func() Result {
	if os.Geteuid() != 0 {
		return fail("run nixcell as root (sudo)", "running as user %d", os.Geteuid())
	}
	return ok("running as root")
}}
