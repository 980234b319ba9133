// The console agent: one process per nixcell instance that keeps the
// consoles of its running containers and copies each to its console log.
// It runs before the Go runtime starts (a constructor), so it costs the
// host about a megabyte however many containers run; see agent_linux.go.
//
// Started as: EXE console-agent SOCKET LOCK, with _NIXCELL_CONSOLE_AGENT=1.
// It takes LOCK (one agent per instance), listens on SOCKET (0600, root's
// peers only) and receives, per container, one message: a struct request
// and the file descriptors of the console's master side, the init's pidfd,
// the container's state directory and its console log. It copies what the
// master reads to the log ("\r\n" as "\n"), renaming the log to NAME.1
// when it would pass half the cap, and when the init ends it writes the
// init's wait status to the request's exit_name in the state directory, if
// the kernel says it (PIDFD_INFO_EXIT, Linux 6.15). It exits once it has
// kept no console for IDLE_MS, removing its socket and lock, and the
// directory that held them when it is left empty.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define AGENT_ENV "_NIXCELL_CONSOLE_AGENT"
#define REQUEST_MAGIC 0x4e58434fu /* "NXCO" */
#define IDLE_MS 2000
#define EXIT_RETRY_MS 20
#define EXIT_RETRIES 250 /* 5 s for the host's init to reap the container's */
#define BUF_SIZE 65536

// request is the message a nixcell command sends with a console (see
// client_linux.go, which must agree).
struct request {
	uint32_t magic;
	uint32_t nfds;       /* 4: master, pidfd, state directory, log */
	uint64_t max_bytes;  /* the log and its previous part together */
	char name[64];       /* the log's name in the directory */
	char exit_name[64];  /* where the init's wait status goes, beside it */
};

// pidfd_info as of Linux 6.15 (PIDFD_INFO_SIZE_VER0): exit_code is
// valid when the kernel sets PIDFD_INFO_EXIT in mask.
struct nc_pidfd_info {
	uint64_t mask;
	uint64_t cgroupid;
	uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
	int32_t exit_code;
};
#define NC_PIDFD_INFO_EXIT (1UL << 3)
#define NC_PIDFD_GET_INFO _IOWR(0xFF, 11, struct nc_pidfd_info)

struct console;

// watch is what an epoll event points to.
struct watch {
	int kind; /* W_MASTER, W_INIT */
	struct console *c;
};
enum { W_LISTEN, W_MASTER, W_INIT };

struct console {
	int master, peer, pidfd, dir, log;
	char name[64], old[68]; /* the log's name, and NAME.1 */
	char exit_name[64], exit_tmp[68];
	uint64_t half, size;
	int cr;            /* the '\r's held back at the end of the last read */
	int ended;         /* the init has ended; waiting for its exit status */
	int retries;
	struct watch wm, wi;
	struct console *next;
};

static int epfd = -1, listener = -1;
static const char *sock_path;
static struct console *consoles;
static int kept; /* consoles whose init runs or whose status is awaited */
static char buf[BUF_SIZE];
static char out[2 * BUF_SIZE]; /* a piece, and the '\r's held before it */
static struct watch wlisten = {W_LISTEN, NULL};

static void closefd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static int listen_on(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(a.sun_path))
		return -1;
	strcpy(a.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	unlink(path);
	mode_t old = umask(0077);
	int r = bind(fd, (struct sockaddr *)&a, sizeof(a));
	umask(old);
	if (r < 0 || listen(fd, 64) < 0) {
		close(fd);
		return -1;
	}
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &wlisten};
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void write_all(struct console *c, const char *p, size_t n)
{
	while (n > 0 && c->log >= 0) {
		ssize_t w = write(c->log, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* a full disk loses console output, nothing else */
		p += w;
		n -= (size_t)w;
		c->size += (uint64_t)w;
	}
}

// reopen starts a new log, after a rotation or a failure to start one.
static void reopen(struct console *c)
{
	closefd(&c->log);
	c->log = openat(c->dir, c->name, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
	c->size = 0;
}

// rotate keeps the current log as NAME.1 and starts a new one; when the
// rename fails, the log starts over, so the cap holds anyway.
static void rotate(struct console *c)
{
	if (renameat(c->dir, c->name, c->dir, c->old) < 0 && c->log >= 0) {
		if (ftruncate(c->log, 0) == 0)
			c->size = 0;
		return;
	}
	reopen(c);
}

// put writes a piece of console output with "\r\n" (and "\r\r\n", a
// program's "\r\n" through the terminal's output processing) as "\n",
// rotating the log before it would pass half the cap. The '\r's at the
// end of a piece wait for the next; other '\r's are kept.
static void put(struct console *c, const char *p, size_t n)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r' && c->cr < BUF_SIZE) {
			c->cr++;
			continue;
		}
		if (p[i] != '\n')
			for (; c->cr > 0; c->cr--)
				out[o++] = '\r';
		c->cr = 0;
		out[o++] = p[i];
	}
	if (c->log < 0)
		reopen(c);
	if (c->size > 0 && c->size + o > c->half)
		rotate(c);
	write_all(c, out, o);
}

// pump copies what the master has; at most a few reads per event, so one
// noisy console cannot starve the others.
static void pump(struct console *c, int drain)
{
	for (int i = 0; drain || i < 4; i++) {
		ssize_t n = read(c->master, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		put(c, buf, (size_t)n);
	}
}

static void drop(struct console *c)
{
	for (struct console **p = &consoles; *p; p = &(*p)->next) {
		if (*p == c) {
			*p = c->next;
			break;
		}
	}
	closefd(&c->master);
	closefd(&c->peer);
	closefd(&c->pidfd);
	closefd(&c->dir);
	closefd(&c->log);
	free(c);
	kept--;
}

// record writes the init's wait status to exit_name once the kernel has
// it (after the host's init has reaped the container's); it gives up when
// the kernel cannot say.
static void record(struct console *c)
{
	struct nc_pidfd_info info = {.mask = NC_PIDFD_INFO_EXIT};
	if (ioctl(c->pidfd, NC_PIDFD_GET_INFO, &info) < 0) {
		/* ENOTTY: before Linux 6.13; ESRCH: reaped, and the kernel kept
		 * no exit status (before 6.15). */
		drop(c);
		return;
	}
	if (!(info.mask & NC_PIDFD_INFO_EXIT)) {
		/* Not reaped yet. */
		if (++c->retries < EXIT_RETRIES)
			return;
		drop(c);
		return;
	}
	int fd = openat(c->dir, c->exit_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd >= 0) {
		char s[32];
		int n = snprintf(s, sizeof(s), "%d\n", info.exit_code);
		int ok = write(fd, s, (size_t)n) == n;
		close(fd);
		if (ok)
			renameat(c->dir, c->exit_tmp, c->dir, c->exit_name);
	}
	drop(c);
}

// ended handles the end of a console's init: the rest of its output goes
// to the log, then its exit status.
static void ended(struct console *c)
{
	epoll_ctl(epfd, EPOLL_CTL_DEL, c->master, NULL);
	epoll_ctl(epfd, EPOLL_CTL_DEL, c->pidfd, NULL);
	/* Every process that had the terminal open is gone with the init:
	 * without the agent's own the master reads what is left, then EIO. */
	closefd(&c->peer);
	pump(c, 1);
	for (; c->cr > 0; c->cr--)
		write_all(c, "\r", 1);
	closefd(&c->master);
	closefd(&c->log);
	c->ended = 1;
	record(c);
}

// valid_name tells whether a name from a request names a file in the
// state directory: not empty, no '/', not "." or "..".
static int valid_name(char *name, size_t size)
{
	name[size - 1] = 0;
	return name[0] && !strchr(name, '/') && strcmp(name, ".") && strcmp(name, "..");
}

// accept_one takes one console from a nixcell command and answers it.
static void accept_one(int conn)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	char answer = 1;
	int fds[4] = {-1, -1, -1, -1};
	if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.uid != 0)
		goto out;
	struct request req;
	union {
		char b[CMSG_SPACE(sizeof(fds))];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = {.iov_base = &req, .iov_len = sizeof(req)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.b, .msg_controllen = sizeof(cbuf.b)};
	struct timeval tv = {.tv_sec = 2};
	setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	ssize_t n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
		size_t got = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		memcpy(fds, CMSG_DATA(cm), (got < 4 ? got : 4) * sizeof(int));
		for (size_t i = 4; i < got; i++)
			close(((int *)CMSG_DATA(cm))[i]);
	}
	if (n != (ssize_t)sizeof(req) || req.magic != REQUEST_MAGIC || req.nfds != 4 || (msg.msg_flags & MSG_CTRUNC))
		goto out;
	if (!valid_name(req.name, sizeof(req.name)) || !valid_name(req.exit_name, sizeof(req.exit_name)))
		goto out;
	for (int i = 0; i < 4; i++)
		if (fds[i] < 0)
			goto out;
	struct console *c = calloc(1, sizeof(*c));
	if (!c)
		goto out;
	c->master = fds[0], c->pidfd = fds[1], c->dir = fds[2], c->log = fds[3];
	c->half = req.max_bytes / 2;
	strcpy(c->name, req.name);
	snprintf(c->old, sizeof(c->old), "%s.1", req.name);
	strcpy(c->exit_name, req.exit_name);
	snprintf(c->exit_tmp, sizeof(c->exit_tmp), ".%s~", req.exit_name);
	c->size = (uint64_t)lseek(c->log, 0, SEEK_END);
	/* A terminal whose last other side closes reads EIO until it is opened
	 * again, as systemd does with /dev/console: the agent keeps one open. */
	c->peer = ioctl(c->master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
	fcntl(c->master, F_SETFL, fcntl(c->master, F_GETFL) | O_NONBLOCK);
	c->wm = (struct watch){W_MASTER, c};
	c->wi = (struct watch){W_INIT, c};
	struct epoll_event em = {.events = EPOLLIN, .data.ptr = &c->wm};
	struct epoll_event ei = {.events = EPOLLIN, .data.ptr = &c->wi};
	if (c->peer < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, c->master, &em) < 0 ||
	    epoll_ctl(epfd, EPOLL_CTL_ADD, c->pidfd, &ei) < 0) {
		epoll_ctl(epfd, EPOLL_CTL_DEL, c->master, NULL);
		closefd(&c->peer);
		free(c);
		goto out;
	}
	for (int i = 0; i < 4; i++)
		fds[i] = -1;
	c->next = consoles;
	consoles = c;
	kept++;
	answer = 0;
out:
	for (int i = 0; i < 4; i++)
		closefd(&fds[i]);
	(void)!write(conn, &answer, 1);
	close(conn);
}

static void accept_all(void)
{
	int conn;
	while ((conn = accept4(listener, NULL, NULL, SOCK_CLOEXEC)) >= 0)
		accept_one(conn);
}

static void serve(const char *lock_path)
{
	int lock = open(lock_path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (lock < 0 || flock(lock, LOCK_EX | LOCK_NB) < 0)
		_exit(0); /* another agent serves this instance, or is leaving */
	/* A leaving agent unlinks its lock while holding it (below): a lock
	 * taken on the unlinked file is no lock, as internal/lockfile says. */
	struct stat held, named;
	if (fstat(lock, &held) < 0 || stat(lock_path, &named) < 0 ||
	    held.st_dev != named.st_dev || held.st_ino != named.st_ino)
		_exit(0);
	signal(SIGPIPE, SIG_IGN);
	if (chdir("/") < 0)
		_exit(1);
	/* Five descriptors per console: as many as the hard limit allows. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0 || (listener = listen_on(sock_path)) < 0)
		_exit(1);
	struct epoll_event evs[64];
	for (;;) {
		int awaiting = 0;
		for (struct console *c = consoles; c; c = c->next)
			awaiting |= c->ended;
		int timeout = awaiting ? EXIT_RETRY_MS : kept == 0 ? IDLE_MS : -1;
		int n = epoll_wait(epfd, evs, 64, timeout);
		if (n < 0 && errno != EINTR)
			_exit(1);
		if (n == 0 && kept == 0) {
			/* Idle: leave, unless a console arrived meanwhile. */
			unlink(sock_path);
			accept_all();
			if (kept == 0) {
				/* Nothing of the agent stays in the instance's
				 * run directory, and the directory itself goes
				 * when the agent was the last thing in it (its
				 * last container destroyed): rmdir leaves a
				 * directory that holds anything. */
				unlink(lock_path);
				char dir[4096];
				if (strlen(lock_path) < sizeof(dir)) {
					strcpy(dir, lock_path);
					char *slash = strrchr(dir, '/');
					if (slash && slash != dir) {
						*slash = 0;
						rmdir(dir);
					}
				}
				_exit(0);
			}
			epoll_ctl(epfd, EPOLL_CTL_DEL, listener, NULL);
			close(listener);
			if ((listener = listen_on(sock_path)) < 0)
				_exit(1);
			continue;
		}
		for (int i = 0; i < n; i++) {
			struct watch *w = evs[i].data.ptr;
			if (w->kind == W_LISTEN)
				accept_all();
			else if (w->kind == W_MASTER && !w->c->ended)
				pump(w->c, 0);
			else if (w->kind == W_INIT && !w->c->ended)
				ended(w->c);
		}
		if (awaiting) {
			struct console *next;
			for (struct console *c = consoles; c; c = next) {
				next = c->next;
				if (c->ended)
					record(c);
			}
		}
	}
}

// agent runs before the Go runtime: in the agent process it serves and
// never returns; in every other process it returns at once.
__attribute__((constructor)) static void agent(int argc, char **argv)
{
	const char *e = getenv(AGENT_ENV);
	if (!e || strcmp(e, "1") != 0 || argc != 4 || strcmp(argv[1], "console-agent") != 0)
		return;
	sock_path = argv[2];
	serve(argv[3]);
	_exit(0);
}
