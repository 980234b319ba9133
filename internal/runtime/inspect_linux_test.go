package runtime

import (
	"encoding/json"
	"testing"

	"github.com/opencontainers/runc/libcontainer"
)

// TestReadInit reads the init from state.json as libcontainer writes it
// (its State type, marshalled), and refuses what is not such a file.
func TestReadInit(t *testing.T) {
	var st libcontainer.State
	st.ID, st.InitProcessPid, st.InitProcessStartTime = "c", 4242, 987654321
	st.CgroupPaths = map[string]string{"": "/sys/fs/cgroup/x"}
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readInit(data)
	if err != nil || got.Pid != 4242 || got.Start != 987654321 {
		t.Errorf("readInit: %+v, %v", got, err)
	}
	// Any order of the fields reads the same.
	got, err = readInit([]byte(`{"config":{"a":[1,{"b":2}]},"init_process_start":5,"x":null,"init_process_pid":3}`))
	if err != nil || got.Pid != 3 || got.Start != 5 {
		t.Errorf("readInit of reordered fields: %+v, %v", got, err)
	}
	for _, bad := range []string{``, `[]`, `{"init_process_pid":3}`, `{"init_process_pid":"x","init_process_start":1}`, `{"init_process_pid":3,`} {
		if got, err := readInit([]byte(bad)); err == nil {
			t.Errorf("readInit(%q) = %+v, want an error", bad, got)
		}
	}
}
