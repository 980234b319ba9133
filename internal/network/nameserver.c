//go:build linux

// The name server: one process per nixcell instance, while containers run,
// answering their names on port 53 of the bridges' addresses. It runs
// before the Go runtime starts (a constructor), so it costs the host about
// a megabyte however many containers run; see nameserver.go.
//
// Started as: EXE name-server TABLE LOCK GLOBAL_LOCK, with
// _NIXCELL_NAME_SERVER=1. It takes LOCK (one server per instance) and
// serves TABLE (nametable.h), which nixcell replaces (rename) whenever the
// running containers change: it watches TABLE's directory (inotify, so it
// wakes only for a change or a query), re-reads TABLE when it is replaced,
// and listens on the addresses it lists that it does not listen on yet
// (one whose bridge does not exist yet is tried again at the next change).
// It leaves when TABLE says nothing runs or is gone, removing LOCK, and the
// directory when that is left empty (under GLOBAL_LOCK, which every writer
// of the directory holds).

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nametable.h"

#define SERVER_ENV "_NIXCELL_NAME_SERVER"
#define MAX_TABLE (64u << 20)
#define MAX_SOCKETS 64
#define INOTIFY_KEY UINT32_MAX
#define GLOBAL_LOCK_WAIT_MS 10000

static const char *table_path, *lock_path, *global_path;
static char dir[PATH_MAX];
static const char *base;
static int epfd = -1, lock_fd = -1;
static uint8_t *table_data;
static struct nametable table;
static struct {
	uint8_t addr[16];
	int fd;
} sockets[MAX_SOCKETS];
static int nsockets;

// take_lock takes path's lock as internal/lockfile does: a lock on a file
// its holder unlinked meanwhile is no lock. It returns the descriptor or
// -1; wait_ms bounds the wait for a held lock (0: none).
static int take_lock(const char *path, int flags, int wait_ms)
{
	int waited = 0;
	for (int tries = 0; tries < 100; tries++) {
		int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC | flags, 0600);
		if (fd < 0)
			return -1;
		while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			if (errno != EWOULDBLOCK || waited >= wait_ms) {
				close(fd);
				return -1;
			}
			nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
			waited += 10;
		}
		struct stat held, named;
		if (fstat(fd, &held) == 0 && stat(path, &named) == 0 && held.st_dev == named.st_dev && held.st_ino == named.st_ino)
			return fd;
		close(fd); /* its holder removed it meanwhile: try what path names now */
	}
	return -1;
}

// listen_on binds a socket to port 53 of a (16 bytes, IPv4 as
// ::ffff:a.b.c.d), unless one is bound already.
static void listen_on(const uint8_t a[16])
{
	for (int i = 0; i < nsockets; i++)
		if (memcmp(sockets[i].addr, a, 16) == 0)
			return;
	if (nsockets == MAX_SOCKETS)
		return;
	static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	int v4 = memcmp(a, v4mapped, 12) == 0;
	int fd = socket(v4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	int r;
	if (v4) {
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(53)};
		memcpy(&sa.sin_addr, a + 12, 4);
		r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	} else {
		int one = 1;
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(53)};
		memcpy(&sa.sin6_addr, a, 16);
		r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	}
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)nsockets};
	if (r < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		close(fd); /* no such address (yet): tried again at the next change */
		return;
	}
	memcpy(sockets[nsockets].addr, a, 16);
	sockets[nsockets++].fd = fd;
}

// read_table reads the table and returns its bytes, t pointing into them,
// when something runs; NULL when it says nothing runs, is gone or is no
// table of this version.
static uint8_t *read_table(struct nametable *t)
{
	int fd = open(table_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	struct stat st;
	uint8_t *data = NULL;
	size_t got = 0;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 && (uint64_t)st.st_size <= MAX_TABLE &&
	    (data = malloc((size_t)st.st_size)) != NULL) {
		while (got < (size_t)st.st_size) {
			ssize_t n = read(fd, data + got, (size_t)st.st_size - got);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			got += (size_t)n;
		}
	}
	close(fd);
	if (!data || got != (size_t)st.st_size || nt_parse(t, data, got) < 0 || t->runs == 0) {
		free(data);
		return NULL;
	}
	return data;
}

// load serves the table as it is now and returns 1, or returns 0 when it
// says nothing runs (the old one stays until the server leaves).
static int load(void)
{
	struct nametable t;
	uint8_t *data = read_table(&t);
	if (!data)
		return 0;
	free(table_data);
	table_data = data;
	table = t;
	for (uint32_t i = 0; i < t.nlisten; i++)
		listen_on(nt_listen(&t, i));
	return 1;
}

// answer_all answers what socket i has received, a few packets at a time
// so one busy bridge does not starve the others.
static void answer_all(int i)
{
	uint8_t query[1500], reply[NT_REPLY_MAX];
	for (int k = 0; k < 16; k++) {
		struct sockaddr_storage from;
		socklen_t fromlen = sizeof(from);
		ssize_t n = recvfrom(sockets[i].fd, query, sizeof(query), 0, (struct sockaddr *)&from, &fromlen);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return;
		uint8_t client[16] = {0};
		if (from.ss_family == AF_INET && fromlen >= sizeof(struct sockaddr_in)) {
			client[10] = client[11] = 0xff;
			memcpy(client + 12, &((struct sockaddr_in *)&from)->sin_addr, 4);
		} else if (from.ss_family == AF_INET6 && fromlen >= sizeof(struct sockaddr_in6)) {
			memcpy(client, &((struct sockaddr_in6 *)&from)->sin6_addr, 16);
		} else {
			continue;
		}
		int r = nt_answer(&table, query, (size_t)n, client, reply);
		if (r > 0)
			(void)sendto(sockets[i].fd, reply, (size_t)r, 0, (struct sockaddr *)&from, fromlen);
	}
}

// changed drains the watch of the table's directory and tells whether the
// table was replaced or removed (2 when the directory itself went).
static int changed(int ifd)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	int what = 0;
	for (;;) {
		ssize_t n = read(ifd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return what;
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED))
				what = 2;
			else if ((ev->mask & IN_Q_OVERFLOW) && what == 0)
				what = 1; /* events were lost: read the table again */
			else if (ev->len > 0 && strcmp(ev->name, base) == 0 && what == 0)
				what = 1;
			p += sizeof(*ev) + ev->len;
		}
	}
}

// leave ends the server once nothing runs: it closes its sockets (so a
// new server can have the addresses), removes its lock, and the directory
// when nothing else is left in it. A start that wrote a new table meanwhile
// found the lock held and started no server: so after the lock is gone the
// table is read once more, and the server stays when something runs and it
// gets the lock again (otherwise the one that start began has it).
static void leave(void)
{
	for (;;) {
		for (int i = 0; i < nsockets; i++)
			close(sockets[i].fd);
		nsockets = 0;
		unlink(lock_path); /* held: see internal/lockfile */
		close(lock_fd);
		lock_fd = -1;
		struct nametable t;
		uint8_t *data = read_table(&t);
		if (!data)
			break;
		free(data);
		if ((lock_fd = take_lock(lock_path, O_CREAT, 0)) < 0)
			_exit(0); /* the server that start began serves */
		if (load())
			return;
	}
	int global = take_lock(global_path, O_CREAT, GLOBAL_LOCK_WAIT_MS);
	if (global >= 0) {
		rmdir(dir); /* only when empty */
		close(global);
	}
	_exit(0);
}

static void serve(void)
{
	lock_fd = take_lock(lock_path, O_CREAT, 0);
	if (lock_fd < 0)
		_exit(0); /* another server runs for this instance, or is leaving */
	signal(SIGPIPE, SIG_IGN);
	if (strlen(table_path) >= sizeof(dir))
		_exit(1);
	strcpy(dir, table_path);
	char *slash = strrchr(dir, '/');
	if (!slash || slash == dir || !slash[1])
		_exit(1);
	*slash = 0;
	base = table_path + (slash - dir) + 1;
	if (chdir("/") < 0)
		_exit(1);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	int ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (epfd < 0 || ifd < 0 ||
	    inotify_add_watch(ifd, dir, IN_ONLYDIR | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF) < 0)
		_exit(1);
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = INOTIFY_KEY};
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, ifd, &ev) < 0)
		_exit(1);
	/* Watched before the first read: no change is missed. */
	if (!load())
		leave();
	struct epoll_event evs[16];
	for (;;) {
		int n = epoll_wait(epfd, evs, 16, -1);
		if (n < 0 && errno != EINTR)
			_exit(1);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u32 != INOTIFY_KEY) {
				answer_all((int)evs[i].data.u32);
				continue;
			}
			int what = changed(ifd);
			if (what == 2)
				_exit(0); /* the run directory is gone, and the lock with it */
			if (what == 1 && !load())
				leave();
		}
	}
}

// name_server runs before the Go runtime: in the name server's process it
// serves and never returns; in every other process it returns at once.
__attribute__((constructor)) static void name_server(int argc, char **argv)
{
	const char *e = getenv(SERVER_ENV);
	if (!e || strcmp(e, "1") != 0 || argc != 5 || strcmp(argv[1], "name-server") != 0)
		return;
	table_path = argv[2], lock_path = argv[3], global_path = argv[4];
	serve();
	_exit(0);
}
