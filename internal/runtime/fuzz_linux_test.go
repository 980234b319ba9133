package runtime

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzLastExit: whatever last-exit.json and the console agent's
// init-exit.PID hold, a stopped container's last exit reads as an exit
// status a shell could give: 0 to 255, with a signal only for 128+N. The
// files are written where LastExitOf reads them, in a directory the fuzz
// target's executions share (each worker runs them one at a time); no
// container of that name has runtime state, so the files are all there is.
func FuzzLastExit(f *testing.F) {
	for _, s := range [][2]string{
		{`{"pid": 42, "status": 0, "oomKills": 0}`, ""},
		{`{"pid": 42, "status": 9, "oomKills": 1}`, ""},
		{`{"pid": 42, "status": 256, "stopped": true}`, ""},
		{`{"pid": 42, "oomKills": 3}`, "9\n"},
		{`{"pid": 42}`, "2\n"},
		{`{"pid": 42}`, "1\n"},
		{`{"pid": 42}`, "4991"},
		{`{"pid": 42}`, "-1"},
		{`{"pid": 42}`, "4294967295"},
		{`{"pid": -42, "status": 4294967295}`, "x"},
		{`{"pid": 42, "status": -1}`, ""},
		{`null`, ""}, {``, ""}, {`{"pid": `, ""},
	} {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	dir := f.TempDir()
	stateRoot := filepath.Join(dir, "runtime")
	consoleLog := filepath.Join(dir, "console.log")
	f.Fuzz(func(t *testing.T, record, agent []byte) {
		if err := os.WriteFile(filepath.Join(dir, lastExitFile), record, 0o600); err != nil {
			t.Fatal(err)
		}
		// The agent's file names the pid the record gives; 42 is the
		// seeds' (others leave it unread).
		if err := os.WriteFile(filepath.Join(dir, initExitFile(42)), agent, 0o600); err != nil {
			t.Fatal(err)
		}
		e, ok := LastExitOf(stateRoot, "web", consoleLog)
		if !ok {
			return
		}
		if e.Code < 0 || e.Code > 255 {
			t.Fatalf("last exit %+v from %q and %q: not a status of 0 to 255", e, record, agent)
		}
		if e.Signal != 0 && (e.Code != 128+int(e.Signal) || e.Signal > 127) {
			t.Fatalf("last exit %+v from %q and %q: signal and status disagree", e, record, agent)
		}
		if e.OOMKilled && e.Known && e.Signal != unix.SIGKILL {
			t.Fatalf("last exit %+v: killed by the OOM killer, but not by SIGKILL", e)
		}
	})
}
