package cell

import "testing"

func TestRootEntry(t *testing.T) {
	for _, c := range []struct {
		passwd, shell, home string
		ok                  bool
	}{
		{"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/:/usr/sbin/nologin\n", "/bin/bash", "/root", true},
		{"nobody:x:65534:65534::/:/bin/false\nroot:x:0:0:System administrator:/root:/run/current-system/sw/bin/bash\n", "/run/current-system/sw/bin/bash", "/root", true},
		{"root:x:0:0:::", "/bin/sh", "/", true},
		{"rooter:x:0:0::/r:/bin/zsh\n# root:x:0:0::/root:/bin/sh\n", "", "", false},
		{"", "", "", false},
	} {
		shell, home, ok := rootEntry(c.passwd)
		if shell != c.shell || home != c.home || ok != c.ok {
			t.Errorf("rootEntry(%q) = %q, %q, %v; want %q, %q, %v", c.passwd, shell, home, ok, c.shell, c.home, c.ok)
		}
	}
}
