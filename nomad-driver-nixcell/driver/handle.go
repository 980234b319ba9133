package driver

import (
	"sync"
	"time"

	"github.com/hashicorp/nomad/plugins/drivers"
)

// taskState is what Nomad keeps of a task for the driver (the task
// handle's DriverState), so that a restarted plugin finds its container
// again.
type taskState struct {
	Container string
	StateDir  string
	// Pid and InitStartedAt identify the container's init: a container
	// that was restarted by someone else is not the task's.
	Pid           int
	InitStartedAt time.Time
	StartedAt     time.Time
	// IPv4 is the container's address on nixcell's network ("" in a
	// Nomad network namespace).
	IPv4 string
}

// taskHandle is a running or finished task.
type taskHandle struct {
	id    string
	cfg   *drivers.TaskConfig
	state taskState
	// done is closed when the init has exited; exit is set then.
	done chan struct{}

	mu          sync.Mutex
	exit        *drivers.ExitResult
	completedAt time.Time
	// stopDone is closed when a stop by the driver has ended; stopped is
	// how, the exit to report when the init's own status is unknown (it is
	// not the plugin's child).
	stopDone chan struct{}
	stopped  *drivers.ExitResult
}

func newHandle(id string, cfg *drivers.TaskConfig, st taskState) *taskHandle {
	return &taskHandle{id: id, cfg: cfg, state: st, done: make(chan struct{})}
}

// finish records the init's exit.
func (h *taskHandle) finish(res *drivers.ExitResult) {
	h.mu.Lock()
	h.exit, h.completedAt = res, time.Now()
	h.mu.Unlock()
	close(h.done)
}

// beginStop notes that the driver stops the task; it tells whether this
// is the first stop, which must call endStop.
func (h *taskHandle) beginStop() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopDone != nil {
		return false
	}
	h.stopDone = make(chan struct{})
	return true
}

// endStop records how the first stop ended (nil: it failed).
func (h *taskHandle) endStop(res *drivers.ExitResult) {
	h.mu.Lock()
	h.stopped = res
	close(h.stopDone)
	h.mu.Unlock()
}

// stopResult waits for the driver's stop, if there is one, and returns how
// it ended; nil when the driver did not stop the task.
func (h *taskHandle) stopResult() *drivers.ExitResult {
	h.mu.Lock()
	done := h.stopDone
	h.mu.Unlock()
	if done == nil {
		return nil
	}
	<-done
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stopped.Copy()
}

func (h *taskHandle) exited() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

func (h *taskHandle) status() *drivers.TaskStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := &drivers.TaskStatus{
		ID:        h.id,
		Name:      h.cfg.Name,
		State:     drivers.TaskStateRunning,
		StartedAt: h.state.StartedAt,
		DriverAttributes: map[string]string{
			"container": h.state.Container,
			"state_dir": h.state.StateDir,
		},
	}
	if h.exit != nil {
		st.State, st.CompletedAt, st.ExitResult = drivers.TaskStateExited, h.completedAt, h.exit.Copy()
	}
	return st
}

// tasks are the driver's tasks by ID.
type tasks struct {
	mu sync.RWMutex
	m  map[string]*taskHandle
}

func (t *tasks) get(id string) (*taskHandle, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	h, ok := t.m[id]
	return h, ok
}

// add stores h unless a task of its ID exists; it tells whether it did.
func (t *tasks) add(h *taskHandle) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.m[h.id]; ok {
		return false
	}
	t.m[h.id] = h
	return true
}

func (t *tasks) remove(id string) {
	t.mu.Lock()
	delete(t.m, id)
	t.mu.Unlock()
}
