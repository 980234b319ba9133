package e2e

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/testutil"
)

// runWithin runs nixcell, killing it after d: a command that hangs fails
// the test (exit -1) instead of the whole run.
func (in *instance) runWithin(d time.Duration, args ...string) result {
	in.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c := in.cmd(args...)
	cmd := exec.CommandContext(ctx, c.Path, c.Args[1:]...)
	cmd.Env = c.Env
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		in.t.Errorf("nixcell %s did not finish within %v: %s", strings.Join(args, " "), d, errb.String())
		return result{out.String(), errb.String(), -1}
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		in.t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

// TestOwnNames: containers named as nixcell's own files are containers
// like any other (issue 13, item 2). global was the instance's lock file
// (create hung for ever and blocked every other create); tasks was a file
// of the cgroup directory above the container's on cgroup v1 (start
// failed). Each is created, started, listed, stopped and destroyed beside
// another container, and nothing is left.
func TestOwnNames(t *testing.T) {
	in := newInstance(t)
	other := testutil.Name("own")
	in.must("create", other, "--rootfs", busyboxRoot(t))
	for _, name := range []string{"global", "tasks", "network", "containers", "host", "locks", "runs", "dns"} {
		r := in.runWithin(30*time.Second, "create", name, "--rootfs", busyboxRoot(t))
		if r.code != 0 {
			t.Errorf("create %s: %s", name, r)
			continue
		}
		for _, args := range [][]string{{"start", name}, {"start", other}, {"list"}, {"stop", other}, {"stop", name}, {"destroy", name}} {
			if r := in.runWithin(30*time.Second, args...); r.code != 0 {
				t.Errorf("%s: %s", strings.Join(args, " "), r)
			}
		}
		in.expectTraces("after "+name+" was destroyed", name)
	}
	if r := in.run("create", "localhost", "--rootfs", busyboxRoot(t)); r.code != 2 || !strings.Contains(r.stderr, "names the host itself") {
		t.Errorf("create localhost: %s", r)
	}
}
