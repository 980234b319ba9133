// The name server's table and its answers: plain C, no I/O, no policy.
// nametable.go writes the table (and says what it means); nameserver.c
// serves it; nametable_cgo.go gives the tests the same functions.

#ifndef NIXCELL_NAMETABLE_H
#define NIXCELL_NAMETABLE_H

#include <stddef.h>
#include <stdint.h>

// The table's layout (little-endian), as nametable.go writes it:
//
//	header    "NXCDNS", u16 version, u32 runs, u32 listens,
//	          u32 containers, u32 clients                        (24 bytes)
//	listen    u8 address[16] (IPv4 as ::ffff:a.b.c.d)            (16 bytes)
//	container u8 name length, u8 name[63], u8 flags (1: IPv4,
//	          2: IPv6), u8 zero[3], u8 ipv4[4], u8 ipv6[16],
//	          u32 group                                          (92 bytes)
//	client    u8 address[16], u32 container index                (20 bytes)
#define NT_MAGIC "NXCDNS"
#define NT_VERSION 1
#define NT_HEADER 24
#define NT_LISTEN 16
#define NT_CONTAINER 92
#define NT_CLIENT 20
#define NT_MAX_ENTRIES (1u << 20)
#define NT_NAME_MAX 63

// NT_REPLY_MAX bounds every reply: a header, a question of at most 259
// bytes and one answer of at most 28.
#define NT_REPLY_MAX 512

struct nametable {
	uint32_t runs;
	uint32_t nlisten, ncontainers, nclients;
	const uint8_t *listen, *containers, *clients; /* into the parsed bytes */
};

// nt_parse checks data and points t into it (data must outlive t); it
// returns 0, or -1 when data is not a table of this version.
int nt_parse(struct nametable *t, const uint8_t *data, size_t len);

// nt_listen returns the i-th address to listen on (i < t->nlisten).
const uint8_t *nt_listen(const struct nametable *t, uint32_t i);

// nt_answer builds in reply (NT_REPLY_MAX bytes) the answer to the query
// of len bytes from client (16 bytes, IPv4 as ::ffff:a.b.c.d) and returns
// its length, or -1 when the packet gets no answer (not a query of one
// question, a name that is malformed or compressed).
int nt_answer(const struct nametable *t, const uint8_t *query, size_t len, const uint8_t client[16], uint8_t *reply);

#endif
