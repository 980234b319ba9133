/*
 * The exec fast path's C side: see execfast_linux.go for what it does and
 * why, and execfast_linux.c for the steps.
 */
#ifndef NIXCELL_EXECFAST_H
#define NIXCELL_EXECFAST_H

#include <stddef.h>
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

/* nc_init_alive tells whether pid is still the init that started at start
 * (clock ticks after boot, field 22 of /proc/PID/stat, as libcontainer
 * records it); a zombie is not. */
int nc_init_alive(int pid, uint64_t start);

/* nc_namespaces finds the namespaces of pid that are not the caller's own
 * (joining one's own user namespace is an error): *join_pid for the PID
 * namespace, joined apart, and the others as CLONE_NEW* flags in *flags.
 * It returns -1 with errno set when the caller's cannot be read, -2 when
 * the init's cannot (it is gone). */
int nc_namespaces(int pid, int *join_pid, int *flags);

/* How a container's freezer says it is frozen: cgroup v1's freezer.state
 * not THAWED (or unreadable), cgroup v2's cgroup.freeze 1. */
enum nc_freezer { NC_FREEZER_NONE, NC_FREEZER_V1, NC_FREEZER_V2 };

/* nc_frozen tells whether the freezer file of that kind holds the
 * container frozen. */
int nc_frozen(int kind, const char *file);

/* The exec plan: what the fast path computed for a container's init,
 * written by Go (execplan_linux.go) into the init's runtime state
 * directory, read by the early path (execearly_linux.c) before the Go
 * runtime starts. Native byte order, fixed layout:
 *
 *   struct nc_plan_header
 *   strings, each a uint32_t length (the NUL included) and its bytes
 *   ending in its only NUL: cgroup2 directory ("" for none), freezer
 *   file, ntasks cgroup v1 tasks files, keyring, nenv environment
 *   entries, $PATH, working directory
 *   zeros up to a multiple of 8, then filter_len struct sock_filter
 *
 * and nothing after. */
#define NC_PLAN_FILE "nixcell-exec.plan"
#define NC_PLAN_MAGIC 0x5045584eu /* "NXEP" */
#define NC_PLAN_VERSION 1
#define NC_PLAN_MAX (1 << 20)
#define NC_PLAN_MAX_TASKS 64
#define NC_PLAN_MAX_ENV 256

struct nc_plan_header {
	uint32_t magic, version, length;
	int32_t init_pid;
	uint64_t init_start; /* clock ticks after boot, /proc/PID/stat field 22 */
	uint64_t bounding, effective, permitted;
	uint32_t has_home;
	uint32_t freezer_kind; /* enum nc_freezer */
	uint32_t ntasks, nenv, filter_len, reserved;
};

struct nc_plan {
	int32_t init_pid;
	uint64_t init_start;
	uint64_t bounding, effective, permitted;
	int has_home;
	int freezer_kind;
	const char *cgroup2, *freezer, *keyring, *path, *cwd;
	uint32_t ntasks, nenv;
	const char *tasks[NC_PLAN_MAX_TASKS];
	const char *env[NC_PLAN_MAX_ENV + 2]; /* NULL-terminated, a spare slot for HOME */
	const struct sock_filter *filter;     /* into the buffer parsed */
	unsigned short filter_len;
};

/* nc_plan_parse reads a plan from buf (8-byte aligned; the strings and
 * the filter point into it) and returns 0, or -1 when it is not a valid
 * plan of this version. */
int nc_plan_parse(const void *buf, size_t len, struct nc_plan *p);

#endif
