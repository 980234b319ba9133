// init-floor: what setting up a container's init costs when C does it, with
// no runtime in between: the floor an own init stage could reach, against
// libcontainer's phase of a start ("namespaces, cgroup, mounts" in
// `nixcell start --trace`). Run it through init-floor.sh.
//
// Each round clones a child into new user, mount, PID, IPC, UTS, network
// and cgroup namespaces, writes its ID maps (nixcell's: 0 → 1048576, 65536
// IDs), and the child makes what nixcell's configuration asks libcontainer
// for: its root bound onto itself, /proc, /dev (a prepared directory) with
// its pts, shm and mqueue, /sys read-only, the cgroup2 tree, tmpfs /run and
// /tmp, /run/host, the six Nix binds, then pivot_root, five read-only paths
// of /proc, the host name, no_new_privs, a seccomp program of the deny
// list's size and the bounding set. It stops where the init would be
// executed and reports the time from the clone. Not done: moving the child
// into its cgroups (an RCU grace period when the lock is cold; none with
// CLONE_INTO_CGROUP on cgroup v2), the console, the cgroup's limits.
//
// usage: init-floor ROOT DEV [ROUNDS]   (ROOT and DEV as init-floor.sh makes them)
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *root, *dev;
static int release[2], report[2];
static double t0;

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void fail(const char *what, const char *path)
{
	fprintf(stderr, "init-floor: %s %s: %s\n", what, path, strerror(errno));
	_exit(1);
}

// mount_in mounts src on dst inside the new root (before pivot_root).
static void mount_in(const char *src, const char *dst, const char *type, unsigned long flags, const char *data)
{
	char path[4096];
	snprintf(path, sizeof path, "%s%s", root, dst);
	if (mount(src, path, type, flags, data))
		fail("mounting on", path);
}

static int child(void *arg)
{
	(void)arg;
	char c;
	close(release[1]);
	if (read(release[0], &c, 1) != 1)
		_exit(1);
	if (setresgid(0, 0, 0) || setresuid(0, 0, 0))
		fail("becoming root in", "the user namespace");
	if (mount("", "/", NULL, MS_SLAVE | MS_REC, NULL))
		fail("making slave", "/");
	if (mount(root, root, NULL, MS_BIND | MS_REC, NULL))
		fail("binding", root);
	const unsigned long nse = MS_NOSUID | MS_NODEV | MS_NOEXEC;
	mount_in("proc", "/proc", "proc", nse, NULL);
	mount_in(dev, "/dev", NULL, MS_BIND | MS_REC, NULL);
	mount_in("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
	mount_in("shm", "/dev/shm", "tmpfs", nse, "mode=1777,size=65536k");
	mount_in("mqueue", "/dev/mqueue", "mqueue", nse, NULL);
	mount_in("sysfs", "/sys", "sysfs", nse | MS_RDONLY, NULL);
	mount_in("cgroup2", "/sys/fs/cgroup", "cgroup2", nse, NULL);
	mount_in("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV | MS_STRICTATIME, "mode=755");
	mount_in("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_STRICTATIME, "mode=1777");
	char host[4096];
	snprintf(host, sizeof host, "%s/run/host", root);
	if (mkdir(host, 0755))
		fail("making", host);
	mount_in("/run", "/run/host", NULL, MS_BIND | MS_REC, NULL);
	const char *nix[] = {"/nix/store", "/nix/var/nix/db", "/nix/var/nix/daemon-socket", "/nix/var/nix/profiles",
			     "/nix/var/nix/profiles/per-user", "/nix/var/nix/gcroots"};
	for (size_t i = 0; i < sizeof nix / sizeof nix[0]; i++)
		mount_in(nix[i], nix[i], NULL, MS_BIND | MS_REC, NULL);
	if (chdir(root) || syscall(SYS_pivot_root, ".", ".") || umount2(".", MNT_DETACH) || chdir("/"))
		fail("pivot_root to", root);
	const char *ro[] = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/driver"};
	for (size_t i = 0; i < sizeof ro / sizeof ro[0]; i++)
		if (mount(ro[i], ro[i], NULL, MS_BIND | MS_REC, NULL) ||
		    mount(NULL, ro[i], NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | nse, NULL))
			fail("making read-only", ro[i]);
	if (sethostname("floor", 5))
		fail("setting the host name", "");
	// As many comparisons as the deny list has calls, all denying numbers
	// no call has, so the program costs what the real one costs to load.
	struct sock_filter f[2 * 80 + 2];
	int n = 0;
	f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
	for (int i = 0; i < 80; i++) {
		f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 100000 + i, 0, 1);
		f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
	}
	f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	struct sock_fprog prog = {.len = (unsigned short)n, .filter = f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog))
		fail("loading", "the seccomp program");
	for (int cap = 0; cap <= CAP_LAST_CAP; cap++)
		if (cap != CAP_SYS_ADMIN && cap != CAP_CHOWN && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0))
			fail("dropping a capability", "");
	double took = now_ms() - t0;
	if (write(report[1], &took, sizeof took) != sizeof took)
		_exit(1);
	_exit(0); // here the init would be executed
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: init-floor ROOT DEV [ROUNDS]\n");
		return 2;
	}
	root = argv[1];
	dev = argv[2];
	int rounds = argc > 3 ? atoi(argv[3]) : 25;
	if (rounds < 1 || rounds > 1000)
		rounds = 25;
	static char stack[1 << 16];
	double *maps = calloc(rounds, sizeof *maps), *setup = calloc(rounds, sizeof *setup);
	for (int r = 0; r < rounds; r++) {
		if (pipe(release) || pipe(report))
			return 1;
		t0 = now_ms();
		pid_t pid = clone(child, stack + sizeof stack,
				  CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET |
				      CLONE_NEWCGROUP | SIGCHLD,
				  NULL);
		if (pid < 0) {
			perror("init-floor: clone");
			return 1;
		}
		close(report[1]);
		const char *map = "0 1048576 65536\n";
		for (int i = 0; i < 2; i++) {
			char path[64];
			snprintf(path, sizeof path, "/proc/%d/%s", pid, i ? "gid_map" : "uid_map");
			int fd = open(path, O_WRONLY | O_CLOEXEC);
			if (fd < 0 || write(fd, map, strlen(map)) != (ssize_t)strlen(map)) {
				perror(path);
				return 1;
			}
			close(fd);
		}
		maps[r] = now_ms() - t0;
		if (write(release[1], "x", 1) != 1)
			return 1;
		close(release[0]);
		close(release[1]);
		ssize_t got = read(report[0], &setup[r], sizeof setup[r]);
		close(report[0]);
		int status;
		waitpid(pid, &status, 0);
		if (got != sizeof setup[r]) {
			fprintf(stderr, "init-floor: the child failed (status %d)\n", status);
			return 1;
		}
	}
	qsort(maps, rounds, sizeof *maps, by_value);
	qsort(setup, rounds, sizeof *setup, by_value);
	printf("clone and ID maps: %.2f ms; clone to the init's execve: %.2f ms (medians of %d)\n", maps[rounds / 2],
	       setup[rounds / 2], rounds);
	return 0;
}
