// The exec fast path's process: cloned from a nixcell thread straight into
// the container's PID namespace and cgroup2 directory, it joins the rest of
// the container and execs the command. See execfast_linux.go.
//
// The child is a copy of a multithreaded Go process: until it execs it
// makes raw system calls only (no malloc, no stdio, no glibc set*id, which
// would wait for threads the copy does not have).

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/capability.h>
#include <linux/keyctl.h>
#include <linux/seccomp.h>

#include "execfast_linux.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x80
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

// struct clone_args of clone3(2), version 2 (with cgroup).
struct nc_clone_args {
	uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};

// The kernel's struct sigaction for rt_sigaction(2) on amd64 and arm64.
struct nc_sigaction {
	void *handler;
	unsigned long flags;
	void *restorer;
	uint64_t mask;
};

static long sys(long nr, long a, long b, long c, long d, long e)
{
	return syscall(nr, a, b, c, d, e);
}

static _Noreturn void fail(const struct nc_exec *x, int step, int err)
{
	struct nc_report r = { step, err };
	(void)!write(x->errfd, &r, sizeof r);
	syscall(SYS_exit_group, 1);
	__builtin_unreachable();
}

#define CHECK(call, step) do { if ((call) < 0) fail(x, step, errno); } while (0)

// All possible CPUs, as runc resets an exec'd process's affinity: the
// kernel clamps the mask to the CPUs the cgroup's cpuset allows.
static const unsigned char all_cpus[8192] = { [0 ... 8191] = 0xff };

static size_t len(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

// executable tells whether path is a file root may execute, as Go's
// exec.LookPath decides; it returns 0 or an errno.
static int executable(const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return errno;
	if (S_ISDIR(st.st_mode))
		return EISDIR;
	if (faccessat(AT_FDCWD, path, X_OK, AT_EACCESS) == 0)
		return 0;
	if (errno != ENOSYS && errno != EPERM)
		return errno;
	return (st.st_mode & 0111) ? 0 : EACCES;
}

// lookup finds argv[0] as Go's exec.LookPath does (runc's exec uses it):
// a name with a slash as it is, anything else in $PATH. Returns the path
// (in buf), or NULL with *err set; *err -1 means not found in $PATH.
static const char *lookup(const struct nc_exec *x, char *buf, size_t size, int *err)
{
	const char *file = x->argv[0];
	for (const char *c = file; *c; c++) {
		if (*c == '/') {
			*err = executable(file);
			return *err ? NULL : file;
		}
	}
	size_t flen = len(file);
	const char *p = x->path;
	for (;;) {
		const char *end = p;
		while (*end && *end != ':')
			end++;
		size_t dlen = end - p;
		const char *dir = dlen ? p : ".";
		if (!dlen)
			dlen = 1;
		// Relative results are refused as Go refuses them (ErrDot).
		if (dir[0] == '/' && dlen + 1 + flen < size) {
			memcpy(buf, dir, dlen);
			buf[dlen] = '/';
			memcpy(buf + dlen + 1, file, flen + 1);
			if (executable(buf) == 0)
				return buf;
		}
		if (!*end)
			break;
		p = end + 1;
	}
	*err = -1;
	return NULL;
}

// home sets HOME from the container's /etc/passwd entry for UID 0, "/"
// without one, as runc does when the environment has no HOME.
static void home(const struct nc_exec *x)
{
	char data[16384];
	char *out = x->homebuf;
	memcpy(out, "HOME=/", 7);
	int fd = open("/etc/passwd", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0) {
		ssize_t n = read(fd, data, sizeof data - 1);
		close(fd);
		data[n > 0 ? n : 0] = '\0';
		for (char *line = data; *line;) {
			char *next = line;
			while (*next && *next != '\n')
				next++;
			char *field[7];
			int nf = 0;
			for (char *f = line; nf < 7 && f <= next;) {
				field[nf++] = f;
				while (f < next && *f != ':')
					f++;
				if (f >= next)
					break;
				f++;
			}
			if (nf == 7 && field[2][0] == '0' && field[2][1] == ':') {
				char *h = field[5];
				size_t hl = field[6] - 1 - h;
				if (hl < PATH_MAX) {
					memcpy(out + 5, h, hl);
					out[5 + hl] = '\0';
				}
				break;
			}
			line = *next ? next + 1 : next;
		}
	}
	char **e = x->envp;
	while (*e)
		e++;
	*e = out;
}

static _Noreturn void child(const struct nc_exec *x)
{
	// Go's signal handlers are not usable here: default actions until the
	// exec, which keeps ignored signals ignored, as an exec from Go does.
	for (int sig = 1; sig <= 64; sig++) {
		struct nc_sigaction old, dfl = { 0 };
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		if (sys(SYS_rt_sigaction, sig, 0, (long)&old, 8, 0) < 0 || old.handler == SIG_IGN)
			continue;
		if (sys(SYS_rt_sigaction, sig, (long)&dfl, 0, 8, 0) < 0)
			fail(x, NC_STEP_SIGNALS, errno);
	}
	// Non-dumpable until the exec: once it is root in the container's user
	// namespace, the container's processes must not reach its memory, its
	// descriptors or /proc/PID/exe (the host's nixcell binary).
	CHECK(prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), NC_STEP_DUMPABLE);

	int tmp[3];
	for (int i = 0; i < 3; i++)
		CHECK(tmp[i] = sys(SYS_fcntl, x->stdio[i], F_DUPFD_CLOEXEC, 3, 0, 0), NC_STEP_STDIO);
	for (int i = 0; i < 3; i++)
		CHECK(sys(SYS_dup3, tmp[i], i, 0, 0, 0), NC_STEP_STDIO);

	// Moving a single thread into a cgroup v1 hierarchy by writing 0 to its
	// tasks file takes no global lock; writing a PID to cgroup.procs waits
	// for an RCU grace period (~10 ms). The process is single-threaded, so
	// it is the same move.
	for (int i = 0; i < x->ntasks; i++)
		if (write(x->tasksfds[i], "0", 1) != 1)
			fail(x, NC_STEP_CGROUP, errno);

	// All at once, user namespace included: the kernel checks the other
	// namespaces with the credentials of the user namespace joined.
	if (x->nsflags)
		CHECK(sys(SYS_setns, x->pidfd, x->nsflags, 0, 0, 0), NC_STEP_SETNS);
	if (x->errfd > 3)
		CHECK(sys(SYS_close_range, 3, x->errfd - 1, 0, 0, 0), NC_STEP_FDS);
	CHECK(sys(SYS_close_range, x->errfd + 1, ~0U, 0, 0, 0), NC_STEP_FDS);

	CHECK(sys(SYS_setsid, 0, 0, 0, 0, 0), NC_STEP_SETSID);
	CHECK(sys(SYS_setresgid, 0, 0, 0, 0, 0), NC_STEP_SETGID);
	CHECK(sys(SYS_setresuid, 0, 0, 0, 0, 0), NC_STEP_SETUID);
	// Denied (EPERM) when the user namespace's setgroups is "deny"; runc
	// leaves the groups alone then.
	if (sys(SYS_setgroups, 0, 0, 0, 0, 0) < 0 && errno != EPERM)
		fail(x, NC_STEP_SETGROUPS, errno);
	if (sys(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, (long)x->keyring, 0, 0, 0) < 0 && errno != ENOSYS)
		fail(x, NC_STEP_KEYRING, errno);
	CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), NC_STEP_NNP);
	sys(SYS_sched_setaffinity, 0, sizeof all_cpus, (long)all_cpus, 0, 0);

	CHECK(chdir(x->cwd), NC_STEP_CHDIR);
	char cwd[PATH_MAX];
	long n = sys(SYS_getcwd, (long)cwd, sizeof cwd, 0, 0, 0);
	if (n < 0)
		fail(x, NC_STEP_GETCWD, errno);
	if (cwd[0] != '/') // "(unreachable)": outside the container's root
		fail(x, NC_STEP_GETCWD, EXDEV);

	for (int cap = 0; cap < 64; cap++) {
		if (x->bounding & (1ULL << cap))
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
			if (errno == EINVAL) // past the kernel's last capability
				break;
			fail(x, NC_STEP_BOUNDING, errno);
		}
	}
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2] = {
		{ (uint32_t)x->effective, (uint32_t)x->permitted, 0 },
		{ (uint32_t)(x->effective >> 32), (uint32_t)(x->permitted >> 32), 0 },
	};
	CHECK(sys(SYS_capset, (long)&hdr, (long)data, 0, 0, 0), NC_STEP_CAPSET);
	CHECK(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), NC_STEP_AMBIENT);

	if (x->homebuf)
		home(x);
	char pathbuf[PATH_MAX];
	int err = 0;
	const char *file = lookup(x, pathbuf, sizeof pathbuf, &err);
	if (!file)
		fail(x, NC_STEP_LOOKUP, err);

	// Last, so that as few calls as possible run under it, as runc does.
	if (x->filter_len) {
		struct sock_fprog prog = { x->filter_len, (struct sock_filter *)x->filter };
		CHECK(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0), NC_STEP_SECCOMP);
	}
	uint64_t none = 0;
	CHECK(sys(SYS_rt_sigprocmask, SIG_SETMASK, (long)&none, 0, 8, 0), NC_STEP_SIGMASK);
	do
		sys(SYS_execve, (long)file, (long)x->argv, (long)x->envp, 0, 0);
	while (errno == EINTR);
	fail(x, NC_STEP_EXEC, errno);
}

long nc_exec_spawn(struct nc_exec *x)
{
	// No signal may run a Go handler in the child.
	uint64_t all = ~0ULL, old;
	long pid;
	sys(SYS_rt_sigprocmask, SIG_SETMASK, (long)&all, (long)&old, 8, 0);
	// The PID namespace is joined by this thread for its children only;
	// the Go side throws the thread away afterwards.
	if (x->join_pidns && sys(SYS_setns, x->pidfd, CLONE_NEWPID, 0, 0, 0) < 0) {
		pid = -errno;
		goto out;
	}
	int pidfd = -1;
	struct nc_clone_args a = { .flags = CLONE_PIDFD, .pidfd = (uint64_t)(uintptr_t)&pidfd, .exit_signal = SIGCHLD };
	if (x->cgroupfd >= 0) {
		a.flags |= CLONE_INTO_CGROUP;
		a.cgroup = x->cgroupfd;
	}
	pid = syscall(SYS_clone3, &a, sizeof a);
	if (pid == 0)
		child(x);
	if (pid < 0)
		pid = -errno;
	x->child_pidfd = pidfd;
out:
	sys(SYS_rt_sigprocmask, SIG_SETMASK, (long)&old, 0, 8, 0);
	return pid;
}

// nc_init_alive: see execfast_linux.h.
int nc_init_alive(int pid, uint64_t start)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	char *s = strrchr(buf, ')');
	if (!s || s[1] != ' ' || s[2] == 'Z' || s[2] == 'X')
		return 0;
	for (int field = 3; field <= 22; field++) { // s ends before field 22 of stat(5)
		s = strchr(s + 1, ' ');
		if (!s)
			return 0;
	}
	char *end;
	errno = 0;
	unsigned long long ticks = strtoull(s + 1, &end, 10);
	return errno == 0 && end != s + 1 && (*end == ' ' || *end == '\n' || *end == 0) && ticks == start;
}

static const struct {
	const char *name;
	int flag;
} ns_types[] = {
	{ "pid", CLONE_NEWPID }, { "user", CLONE_NEWUSER }, { "mnt", CLONE_NEWNS },
	{ "uts", CLONE_NEWUTS }, { "ipc", CLONE_NEWIPC }, { "net", CLONE_NEWNET },
	{ "cgroup", CLONE_NEWCGROUP }, { "time", CLONE_NEWTIME },
};

// nc_namespaces: see execfast_linux.h.
int nc_namespaces(int pid, int *join_pid, int *flags)
{
	*join_pid = 0;
	*flags = 0;
	for (size_t i = 0; i < sizeof ns_types / sizeof ns_types[0]; i++) {
		char path[64];
		struct stat self, init;
		snprintf(path, sizeof path, "/proc/self/ns/%s", ns_types[i].name);
		if (stat(path, &self) < 0) {
			if (errno == ENOENT)
				continue;
			return -1;
		}
		snprintf(path, sizeof path, "/proc/%d/ns/%s", pid, ns_types[i].name);
		if (stat(path, &init) < 0)
			return -2;
		if (self.st_dev == init.st_dev && self.st_ino == init.st_ino)
			continue;
		if (ns_types[i].flag == CLONE_NEWPID)
			*join_pid = 1;
		else
			*flags |= ns_types[i].flag;
	}
	return 0;
}

// nc_frozen: see execfast_linux.h.
int nc_frozen(int kind, const char *file)
{
	char buf[64];
	if (kind == NC_FREEZER_NONE)
		return 0;
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf);
	if (fd >= 0)
		close(fd);
	if (kind == NC_FREEZER_V1)
		return !(n >= 6 && memcmp(buf, "THAWED", 6) == 0);
	return n >= 1 && buf[0] == '1';
}
