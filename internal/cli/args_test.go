package cli

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/cell"
	"github.com/nixcell/nixcell/internal/fault"
	"github.com/nixcell/nixcell/internal/lifecycle"
	"github.com/nixcell/nixcell/internal/spec"
	"github.com/nixcell/nixcell/internal/state"
)

func TestSplitArgs(t *testing.T) {
	cases := map[string][]string{
		"":                                    nil,
		"-I nixpkgs=/src/nixpkgs":             {"-I", "nixpkgs=/src/nixpkgs"},
		`  --option  sandbox false `:          {"--option", "sandbox", "false"},
		`--arg x '"a b"'`:                     {"--arg", "x", `"a b"`},
		`--argstr x "it's"`:                   {"--argstr", "x", "it's"},
		`a\ b c`:                              {"a b", "c"},
		`""`:                                  {""},
		`-I "nixpkgs=/my dir"/x --show-trace`: {"-I", "nixpkgs=/my dir/x", "--show-trace"},
	}
	for in, want := range cases {
		got, err := splitArgs(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("splitArgs(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{`'abc`, `"abc`} {
		if _, err := splitArgs(in); err == nil {
			t.Errorf("splitArgs(%q) succeeded, want unterminated quote error", in)
		}
	}
}

func TestDurationValue(t *testing.T) {
	cases := map[string]time.Duration{"30": 30 * time.Second, "0": 0, "1m30s": 90 * time.Second, "250ms": 250 * time.Millisecond}
	for in, want := range cases {
		var d durationValue
		if err := d.Set(in); err != nil || time.Duration(d) != want {
			t.Errorf("Set(%q) = %v, %v; want %v", in, time.Duration(d), err, want)
		}
	}
	for _, in := range []string{"", "-5s", "abc", "5 s", "1.5"} {
		var d durationValue
		if err := d.Set(in); err == nil {
			t.Errorf("Set(%q) succeeded", in)
		}
	}
}

// TestExitStatusTable: every error class has an exit status, and the
// statuses the help text documents are the ones the table gives.
func TestExitStatusTable(t *testing.T) {
	for _, c := range fault.Classes {
		if _, ok := exitStatuses[c]; !ok {
			t.Errorf("error class %q has no exit status", c)
		}
	}
	for err, want := range map[error]int{
		fmt.Errorf("starting: %w", spec.ErrInvalidName):          exitUsage,
		fmt.Errorf("x: %w", state.ErrNotFound):                   exitFailed,
		usageError{errors.New("missing container name")}:         exitUsage,
		errors.New("a failed system call"):                       exitFailed,
		lifecycle.Check(lifecycle.Stopped, lifecycle.Exec):       exitFailed,
		fmt.Errorf("%w: two configurations", cell.ErrBadRequest): exitUsage,
	} {
		if got := exitStatusOf(err); got != want {
			t.Errorf("exit status of %q = %d, want %d", err, got, want)
		}
	}
}
