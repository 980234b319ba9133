/*
 * The exec fast path's C side: see execfast_linux.go for what it does and
 * why, and execfast_linux.c for the steps.
 */
#ifndef NIXCELL_EXECFAST_H
#define NIXCELL_EXECFAST_H

#include <stdint.h>
#include <linux/filter.h>

/* Failed steps, reported by the child over errfd with the errno. */
enum nc_step {
	NC_STEP_NONE,
	NC_STEP_CLONE,
	NC_STEP_SIGNALS,
	NC_STEP_DUMPABLE,
	NC_STEP_STDIO,
	NC_STEP_CGROUP,
	NC_STEP_SETNS,
	NC_STEP_FDS,
	NC_STEP_SETSID,
	NC_STEP_KEYRING,
	NC_STEP_NNP,
	NC_STEP_CHDIR,
	NC_STEP_BOUNDING,
	NC_STEP_KEEPCAPS,
	NC_STEP_SETGROUPS,
	NC_STEP_SETGID,
	NC_STEP_SETUID,
	NC_STEP_GETCWD,
	NC_STEP_CAPSET,
	NC_STEP_AMBIENT,
	NC_STEP_LOOKUP,
	NC_STEP_SECCOMP,
	NC_STEP_SIGMASK,
	NC_STEP_EXEC,
};

struct nc_report {
	int32_t step;
	int32_t err;
};

struct nc_exec {
	int pidfd;      /* the container's init */
	int join_pidns; /* the calling thread joins its PID namespace before the clone */
	int nsflags;    /* the other namespaces to join (CLONE_NEW*), user among them */
	int cgroupfd;   /* cgroup2 directory to clone into, or -1 */
	const int *tasksfds; /* cgroup v1 "tasks" files, opened for writing */
	int ntasks;
	int stdio[3];
	int errfd;      /* close-on-exec: a report on failure, EOF on exec */
	char *const *argv;
	char **envp;    /* one free slot (NULL) after the last entry, for HOME */
	char *homebuf;  /* room for "HOME=" and a path (PATH_MAX) */
	const char *path; /* $PATH for finding argv[0] */
	const char *cwd;
	const char *keyring;
	uint64_t bounding, effective, permitted;
	const struct sock_filter *filter;
	unsigned short filter_len;
	int child_pidfd; /* set by nc_exec_spawn */
};

/* nc_exec_spawn starts the process and returns its PID, or -errno when the
 * clone itself failed. Everything after the clone is reported over errfd. */
long nc_exec_spawn(struct nc_exec *x);

#endif
