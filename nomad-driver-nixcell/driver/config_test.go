package driver

import (
	"testing"

	"github.com/nixcell/nixcell/internal/spec"
)

func TestContainerName(t *testing.T) {
	alloc := "0c4a1b2e-1111-2222-3333-444455556666"
	seen := map[string]string{}
	for _, task := range []string{"web", "Web", "web_1", "web-1", "a--b", "a-b", "-x-", "___",
		"a-very-long-task-name-that-goes-on-and-on-beyond-what-fits-in-a-label"} {
		name := containerName(alloc, task)
		if err := spec.ValidateName(name); err != nil {
			t.Errorf("task %q: %v", task, err)
		}
		if other, ok := seen[name]; ok {
			t.Errorf("tasks %q and %q share the container name %s", other, task, name)
		}
		seen[name] = task
	}
	if got := containerName(alloc, "web"); got != "nomad-0c4a1b2e-web" {
		t.Errorf("containerName(web) = %s", got)
	}
}

func TestParseSignal(t *testing.T) {
	for _, c := range []struct {
		name    string
		forStop bool
		want    stopSignal
		bad     bool
	}{
		{"", true, stopSignal{nixcell: true}, false},
		{"SIGRTMIN+3", true, stopSignal{nixcell: true, num: 37}, false},
		{"SIGRTMIN+3", false, stopSignal{num: 37}, false},
		{"SIGTERM", true, stopSignal{num: 15}, false},
		{"term", false, stopSignal{num: 15}, false},
		{"SIGRTMIN", false, stopSignal{num: 34}, false},
		{"SIGNOPE", false, stopSignal{}, true},
		{"SIGRTMIN-1", false, stopSignal{}, true},
		{"SIGRTMIN+40", false, stopSignal{}, true},
		{"", false, stopSignal{}, true},
	} {
		got, err := parseSignal(c.name, c.forStop)
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("parseSignal(%q, %v) = %+v, %v", c.name, c.forStop, got, err)
		}
	}
}
