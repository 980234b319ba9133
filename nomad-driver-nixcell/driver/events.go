package driver

import (
	"context"
	"sync"

	"github.com/hashicorp/nomad/plugins/drivers"
)

// events fans the driver's task events out to every TaskEvents stream.
type events struct {
	mu   sync.Mutex
	subs map[chan *drivers.TaskEvent]struct{}
}

// subscribe returns a stream of events that ends with ctx.
func (e *events) subscribe(ctx context.Context) <-chan *drivers.TaskEvent {
	ch := make(chan *drivers.TaskEvent, 16)
	e.mu.Lock()
	if e.subs == nil {
		e.subs = map[chan *drivers.TaskEvent]struct{}{}
	}
	e.subs[ch] = struct{}{}
	e.mu.Unlock()
	go func() {
		<-ctx.Done()
		e.mu.Lock()
		delete(e.subs, ch)
		close(ch)
		e.mu.Unlock()
	}()
	return ch
}

// emit sends ev to every stream; a stream that does not keep up misses it
// rather than holding up a task's start.
func (e *events) emit(ev *drivers.TaskEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for ch := range e.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}
