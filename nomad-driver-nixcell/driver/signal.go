package driver

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// stopSignal is how a task is asked to stop.
type stopSignal struct {
	// nixcell: as nixcell stop does (SIGRTMIN+3 once the init handles it).
	nixcell bool
	num     unix.Signal
}

// sigRTMin is SIGRTMIN in glibc's numbering, which systemd's documentation
// and Nomad's job files use (the kernel's is 32).
const sigRTMin = 34

// parseSignal reads a signal name such as SIGTERM, TERM or SIGRTMIN+3.
// For a stop (forStop), no signal or SIGRTMIN+3 is nixcell's stop.
func parseSignal(name string, forStop bool) (stopSignal, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if n == "" && forStop {
		return stopSignal{nixcell: true}, nil
	}
	if !strings.HasPrefix(n, "SIG") {
		n = "SIG" + n
	}
	var num unix.Signal
	if rest, ok := strings.CutPrefix(n, "SIGRTMIN"); ok {
		off := 0
		if rest != "" {
			v, err := strconv.Atoi(strings.TrimPrefix(rest, "+"))
			if err != nil || !strings.HasPrefix(rest, "+") {
				return stopSignal{}, fmt.Errorf("unknown signal %q", name)
			}
			off = v
		}
		num = unix.Signal(sigRTMin + off)
	} else if num = unix.SignalNum(n); num == 0 {
		return stopSignal{}, fmt.Errorf("unknown signal %q", name)
	}
	if num > 64 {
		return stopSignal{}, fmt.Errorf("unknown signal %q", name)
	}
	return stopSignal{nixcell: forStop && num == sigRTMin+3, num: num}, nil
}
