package network

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"

	"github.com/nixcell/nixcell/internal/atomicfile"
)

// hostsBlock renders the lines that publish the containers' names: each
// running container's host-only (or private veth) addresses, IPv4 first.
func (d Desired) hostsBlock() []string {
	var lines []string
	for _, c := range d.Containers {
		for _, v6 := range []bool{false, true} {
			if a := c.forwardTarget(v6); a.IsValid() {
				lines = append(lines, fmt.Sprintf("%s\t%s", a, c.Name))
			}
		}
	}
	sort.SliceStable(lines, func(i, j int) bool {
		return strings.Fields(lines[i])[1] < strings.Fields(lines[j])[1]
	})
	return lines
}

// replaceBlock returns content with the block between nixcell's markers
// for table replaced by lines; no lines removes the block and its markers,
// so a host without running containers has its file as it was.
func replaceBlock(content []byte, table string, lines []string) []byte {
	begin, end := "# begin "+table+" (managed by nixcell)", "# end "+table
	var out bytes.Buffer
	inside := false
	for _, l := range strings.SplitAfter(string(content), "\n") {
		switch trimmed := strings.TrimRight(l, "\n"); {
		case trimmed == begin:
			inside = true
		case trimmed == end && inside:
			inside = false
		case !inside && l != "":
			out.WriteString(l)
		}
	}
	if len(lines) > 0 {
		if out.Len() > 0 && !bytes.HasSuffix(out.Bytes(), []byte("\n")) {
			out.WriteByte('\n')
		}
		fmt.Fprintf(&out, "%s\n%s\n%s\n", begin, strings.Join(lines, "\n"), end)
	}
	return out.Bytes()
}

// syncHosts publishes the running containers' names in the hosts file.
func syncHosts(d Desired) error {
	path := d.HostsFile
	content, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	updated := replaceBlock(content, d.Settings.Table, d.hostsBlock())
	if bytes.Equal(updated, content) {
		return nil
	}
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	if err := atomicfile.WriteFile(path, updated, mode); err != nil {
		return fmt.Errorf("publishing container names in %s: %w", path, err)
	}
	return nil
}
