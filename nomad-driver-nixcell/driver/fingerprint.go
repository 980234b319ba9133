package driver

import (
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// hostCheck is one thing a host needs to run nixcell containers. The list
// is the driver's until nixcell has a doctor command; then these become
// its checks.
type hostCheck struct {
	name string
	// check returns what is wrong and what to do, "" when all is well.
	check func() string
}

var hostChecks = []hostCheck{
	{"root", func() string {
		if os.Geteuid() != 0 {
			return "the plugin does not run as root (nixcell manages namespaces, cgroups and Nix profiles); run the Nomad client as root"
		}
		return ""
	}},
	{"user namespaces", func() string {
		data, err := os.ReadFile("/proc/sys/user/max_user_namespaces")
		if err != nil {
			return "the kernel has no user namespaces (/proc/sys/user/max_user_namespaces is missing)"
		}
		if strings.TrimSpace(string(data)) == "0" {
			return "user namespaces are disabled; set the sysctl user.max_user_namespaces above 0"
		}
		return ""
	}},
	{"cgroups", func() string {
		var st unix.Statfs_t
		if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
			return "no cgroup file system at /sys/fs/cgroup"
		}
		if st.Type == unix.CGROUP2_SUPER_MAGIC {
			return ""
		}
		// cgroup v1 (or hybrid): the controllers nixcell's limits use.
		for _, c := range []string{"memory", "cpu", "pids", "devices"} {
			if _, err := os.Stat("/sys/fs/cgroup/" + c); err != nil {
				return fmt.Sprintf("the cgroup v1 controller %s is not mounted at /sys/fs/cgroup/%s", c, c)
			}
		}
		return ""
	}},
	{"Nix", func() string {
		for _, c := range []string{"nix-build", "nix-instantiate", "nix-env", "nix-store"} {
			if _, err := exec.LookPath(c); err != nil {
				return c + " is not in the plugin's PATH; install Nix (Debian: nix-bin)"
			}
		}
		if _, err := os.Stat("/nix/store"); err != nil {
			return "there is no /nix/store"
		}
		return ""
	}},
	{"nftables", func() string {
		if _, err := exec.LookPath("nft"); err != nil {
			return "nft is not in the plugin's PATH (nixcell's networking uses it); install nftables"
		}
		return ""
	}},
}

// checkHost runs every check and returns the problems found.
func checkHost() []string {
	var problems []string
	for _, c := range hostChecks {
		if p := c.check(); p != "" {
			problems = append(problems, c.name+": "+p)
		}
	}
	return problems
}
