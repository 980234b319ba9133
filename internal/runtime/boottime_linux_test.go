package runtime

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixcell/nixcell/internal/atomicfile"
)

// TestKeptBootTime: the first read keeps the kernel's boot time with the
// boot's ID; later reads take the kept one (which the kernel's no longer
// matches after the clock is set) as long as the boot ID is this boot's.
func TestKeptBootTime(t *testing.T) {
	file := filepath.Join(t.TempDir(), "boot-time")
	kernel := kernelBootTime()
	if kernel.IsZero() {
		t.Fatal("no btime in /proc/stat")
	}
	if got := keptBootTime(file); !got.Equal(kernel) {
		t.Errorf("first read: %v, want the kernel's %v", got, kernel)
	}
	data, err := os.ReadFile(file)
	id, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	boot := strings.TrimSpace(string(id))
	if err != nil || !strings.HasPrefix(string(data), boot+" ") {
		t.Fatalf("kept %q, %v; want this boot's ID %s first", data, err, boot)
	}
	// As if the clock had been set since: the kernel's boot time moved,
	// the kept one did not.
	kept := kernel.Add(-time.Hour)
	if err := os.WriteFile(file, []byte(boot+" "+strconv.FormatInt(kept.Unix(), 10)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := keptBootTime(file); !got.Equal(kept) {
		t.Errorf("after the clock moved: %v, want the kept %v", got, kept)
	}
	// A file of another boot is replaced.
	if err := os.WriteFile(file, []byte("another-boot 12345\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := keptBootTime(file); !got.Equal(kernel) {
		t.Errorf("with another boot's file: %v, want the kernel's %v", got, kernel)
	}
	if data, _ := os.ReadFile(file); !strings.HasPrefix(string(data), boot+" ") {
		t.Errorf("another boot's file was not replaced: %q", data)
	}
	if left := atomicfile.Leftovers(file); len(left) > 0 {
		t.Errorf("left %v", left)
	}
}
