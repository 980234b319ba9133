// The child of UserNamespace: it holds a user namespace open for its parent
// and runs nothing else, so it needs no exec of its own.
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "userns_linux.h"

enum { stack_size = 16 * 1024 };

struct hold {
	int wait_fd, parent_fd;
	char stack[stack_size];
};

// hold_namespace runs in the child, which shares the parent's memory (and
// the thread-local storage of the thread that cloned it), so it only makes
// system calls that cannot fail as it makes them, leaving errno alone: it
// blocks every signal but SIGKILL, closes its copy of the pipe's write end
// and waits for the pipe's end (its parent closing the write end, or dying).
static int hold_namespace(void *arg)
{
	struct hold *h = arg;
	sigset_t all;
	char c;

	sigfillset(&all);
	syscall(SYS_rt_sigprocmask, SIG_BLOCK, &all, NULL, _NSIG / 8);
	syscall(SYS_close, h->parent_fd);
	syscall(SYS_read, h->wait_fd, &c, 1);
	syscall(SYS_exit, 0);
	return 0;
}

int nixcell_userns_child(int wait_fd, int parent_fd, void **handle)
{
	struct hold *h = malloc(sizeof *h);
	int pid;

	if (h == NULL)
		return -ENOMEM;
	h->wait_fd = wait_fd;
	h->parent_fd = parent_fd;
	// CLONE_VM: no copy of the parent's page tables to make and tear down
	// (most of what a forked helper costs).
	pid = clone(hold_namespace, h->stack + stack_size, CLONE_NEWUSER | CLONE_VM | SIGCHLD, h);
	if (pid < 0) {
		int err = errno;
		free(h);
		return -err;
	}
	*handle = h;
	return pid;
}

void nixcell_userns_free(void *handle)
{
	free(handle);
}
