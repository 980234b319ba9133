// The cgroup lock's warm-up (WarmCgroupMoves), begun for `nixcell [FLAGS]
// start ...` from a constructor, before the Go runtime starts: the first
// move of this process into its own cgroup waits an RCU grace period
// (≈ 12 ms here), and begun ≈ 4 ms sooner than Go could, it is over before
// libcontainer moves the init into its cgroups. Go's warm-up keeps the
// lock warm from there.

#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// own_cgroup_procs finds this process's cgroup.procs in the cgroup2
// hierarchy (at /sys/fs/cgroup, or /sys/fs/cgroup/unified beside v1), as
// ownCgroupProcs does; -1 when there is none.
static int own_cgroup_procs(char *out, size_t size)
{
	const char *mount = NULL;
	if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0)
		mount = "/sys/fs/cgroup";
	else if (access("/sys/fs/cgroup/unified/cgroup.controllers", F_OK) == 0)
		mount = "/sys/fs/cgroup/unified";
	else
		return -1;
	FILE *f = fopen("/proc/self/cgroup", "re");
	if (!f)
		return -1;
	char line[PATH_MAX + 16];
	int found = -1;
	while (fgets(line, sizeof line, f)) {
		if (strncmp(line, "0::/", 4) != 0)
			continue;
		line[strcspn(line, "\n")] = 0;
		int n = snprintf(out, size, "%s%s/cgroup.procs", mount, line + 3);
		found = n > 0 && (size_t)n < size ? 0 : -1;
		break;
	}
	fclose(f);
	return found;
}

static void *warm(void *arg)
{
	char *procs = arg;
	int fd = open(procs, O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		char pid[16];
		int n = snprintf(pid, sizeof pid, "%d", (int)getpid());
		if (write(fd, pid, n) < 0) {
			// Go's warm-up tries again, and the start goes on without.
		}
		close(fd);
	}
	free(procs);
	return NULL;
}

__attribute__((constructor)) static void warm_early(int argc, char **argv)
{
	if (geteuid() != 0)
		return;
	int i = 1;
	while (i < argc && argv[i][0] == '-') {
		if (strcmp(argv[i], "--state-dir") == 0)
			i++; // its value
		i++;
	}
	if (i >= argc || strcmp(argv[i], "start") != 0)
		return;
	char *procs = malloc(PATH_MAX);
	if (!procs)
		return;
	if (own_cgroup_procs(procs, PATH_MAX) < 0) {
		free(procs);
		return;
	}
	// The thread takes no signal: they are the Go runtime's, once it runs.
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_t attr;
	pthread_t t;
	if (pthread_attr_init(&attr) == 0) {
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &attr, warm, procs) != 0)
			free(procs);
		pthread_attr_destroy(&attr);
	} else {
		free(procs);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}
