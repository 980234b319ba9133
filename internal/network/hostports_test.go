package network

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nixcell/nixcell/internal/atomicfile"
	"github.com/nixcell/nixcell/internal/spec"
)

// TestSyncHostPorts: two instances never forward one host port, even for
// containers of the same name; giving ports up always works; an instance
// whose state directory is gone holds nothing.
func TestSyncHostPorts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	reg := filepath.Join(dir, "ids", "ports.json")
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	fwd := func(port uint16) []spec.PortForward {
		return []spec.PortForward{{Protocol: "tcp", HostPort: port, ContainerPort: 80}}
	}
	claims := func(m ...any) map[string][]spec.PortForward {
		out := map[string][]spec.PortForward{}
		for i := 0; i < len(m); i += 2 {
			out[m[i].(string)] = fwd(m[i+1].(uint16))
		}
		return out
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrPortInUse) {
			t.Fatalf("%s: %v, want ErrPortInUse", what, err)
		}
	}
	must("a claims 8080", syncHostPorts(ctx, reg, a, claims("web", uint16(8080))))
	refused("b's web claims a's 8080", syncHostPorts(ctx, reg, b, claims("web", uint16(8080))))
	must("b claims 8081", syncHostPorts(ctx, reg, b, claims("db", uint16(8081))))
	refused("a claims b's 8081 too", syncHostPorts(ctx, reg, a, claims("web", uint16(8080), "x", uint16(8081))))
	must("a gives 8080 up", syncHostPorts(ctx, reg, a, nil))
	must("b claims 8080 now", syncHostPorts(ctx, reg, b, claims("db", uint16(8081), "web", uint16(8080))))

	// A conflict held from before (the registry written by hand here)
	// does not stop a release.
	var r hostPorts
	must("read", atomicfile.ReadJSON(reg, &r))
	r.Instances[a] = claims("web", uint16(8080))
	must("write", atomicfile.WriteJSON(reg, r, 0o600))
	must("a keeps what it held and gives up nothing new", syncHostPorts(ctx, reg, a, claims("web", uint16(8080))))
	must("a gives it up", syncHostPorts(ctx, reg, a, nil))

	// b's state directory goes: its claims with it.
	must("remove b", os.RemoveAll(b))
	must("a claims 8081 once b is gone", syncHostPorts(ctx, reg, a, claims("web", uint16(8081))))
	r = hostPorts{}
	must("read", atomicfile.ReadJSON(reg, &r))
	if _, ok := r.Instances[b]; ok || len(r.Instances) != 1 {
		t.Errorf("the registry after b's directory went: %+v", r.Instances)
	}
}
