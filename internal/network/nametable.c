// The name server's table and its answers (see nametable.h). Every read
// of the table or of a packet is checked against its length first; there
// is no recursion and no compression pointer is followed.

#include <string.h>

#include "nametable.h"

#define DNS_HEADER 12
#define DNS_NAME_MAX 255 /* encoded, with the final zero */
#define TYPE_A 1
#define TYPE_AAAA 28
#define RCODE_NXDOMAIN 3
#define TTL 5

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int valid_name_byte(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

int nt_parse(struct nametable *t, const uint8_t *data, size_t len)
{
	if (len < NT_HEADER || memcmp(data, NT_MAGIC, 6) != 0 || (data[6] | data[7] << 8) != NT_VERSION)
		return -1;
	uint32_t runs = get32(data + 8), nl = get32(data + 12), nc = get32(data + 16), ncl = get32(data + 20);
	if (nl > NT_MAX_ENTRIES || nc > NT_MAX_ENTRIES || ncl > NT_MAX_ENTRIES)
		return -1;
	/* At most 2^20 entries of at most 92 bytes each: no overflow. */
	uint64_t want = NT_HEADER + (uint64_t)nl * NT_LISTEN + (uint64_t)nc * NT_CONTAINER + (uint64_t)ncl * NT_CLIENT;
	if (want != len)
		return -1;
	const uint8_t *listen = data + NT_HEADER;
	const uint8_t *containers = listen + (size_t)nl * NT_LISTEN;
	const uint8_t *clients = containers + (size_t)nc * NT_CONTAINER;
	for (uint32_t i = 0; i < nc; i++) {
		const uint8_t *c = containers + (size_t)i * NT_CONTAINER;
		uint8_t n = c[0];
		if (n == 0 || n > NT_NAME_MAX || c[64] > 3 || c[65] || c[66] || c[67])
			return -1;
		for (uint8_t j = 0; j < NT_NAME_MAX; j++)
			if (j < n ? !valid_name_byte(c[1 + j]) : c[1 + j] != 0)
				return -1;
	}
	for (uint32_t i = 0; i < ncl; i++)
		if (get32(clients + (size_t)i * NT_CLIENT + 16) >= nc)
			return -1;
	*t = (struct nametable){.runs = runs, .nlisten = nl, .ncontainers = nc, .nclients = ncl,
				.listen = listen, .containers = containers, .clients = clients};
	return 0;
}

const uint8_t *nt_listen(const struct nametable *t, uint32_t i)
{
	return t->listen + (size_t)i * NT_LISTEN;
}

static uint8_t lower(uint8_t c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

// label_is tells whether the label of n bytes at p is s (lower-case),
// ignoring ASCII case.
static int label_is(const uint8_t *p, size_t n, const uint8_t *s, size_t sn)
{
	if (n != sn)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (lower(p[i]) != s[i])
			return 0;
	return 1;
}

// find_name returns the index of the container named by the label of n
// bytes at p, or -1.
static int64_t find_name(const struct nametable *t, const uint8_t *p, size_t n)
{
	for (uint32_t i = 0; i < t->ncontainers; i++) {
		const uint8_t *c = t->containers + (size_t)i * NT_CONTAINER;
		if (label_is(p, n, c + 1, c[0]))
			return i;
	}
	return -1;
}

// find_client returns the index of the container that has address a, or
// -1.
static int64_t find_client(const struct nametable *t, const uint8_t a[16])
{
	for (uint32_t i = 0; i < t->nclients; i++) {
		const uint8_t *c = t->clients + (size_t)i * NT_CLIENT;
		if (memcmp(c, a, 16) == 0)
			return get32(c + 16);
	}
	return -1;
}

int nt_answer(const struct nametable *t, const uint8_t *q, size_t len, const uint8_t client[16], uint8_t *reply)
{
	if (len < DNS_HEADER)
		return -1;
	/* A response (QR) is never answered: two servers would answer each
	 * other forever. One question, as every resolver asks. */
	if ((q[2] & 0x80) || q[4] != 0 || q[5] != 1)
		return -1;
	/* The question's name: labels up to a zero, no pointers. Only the
	 * first two labels matter: NAME or NAME.nixcell. */
	size_t off = DNS_HEADER, labels = 0;
	const uint8_t *first = NULL, *second = NULL;
	size_t first_len = 0, second_len = 0;
	for (;;) {
		if (off >= len)
			return -1;
		uint8_t n = q[off];
		if (n == 0)
			break;
		if (n > 63) /* a pointer (0xC0), or reserved (0x40, 0x80) */
			return -1;
		if (off - DNS_HEADER + 1 + n + 1 > DNS_NAME_MAX || len - off - 1 < n)
			return -1;
		if (memchr(q + off + 1, '.', n)) /* as Go's parser, which the tests compare */
			return -1;
		if (labels == 0)
			first = q + off + 1, first_len = n;
		else if (labels == 1)
			second = q + off + 1, second_len = n;
		labels++;
		off += 1 + (size_t)n;
	}
	size_t name_end = off + 1;
	if (len - name_end < 4)
		return -1;
	size_t question = name_end + 4 - DNS_HEADER; /* at most 259 bytes */
	unsigned qtype = (unsigned)q[name_end] << 8 | q[name_end + 1];

	int64_t target = -1;
	if (labels == 1 || (labels == 2 && label_is(second, second_len, (const uint8_t *)"nixcell", 7)))
		target = find_name(t, first, first_len);
	const uint8_t *c = NULL;
	if (target >= 0) {
		/* Visible to itself, and to those of its group (0: none). */
		int64_t asker = find_client(t, client);
		const uint8_t *tc = t->containers + (size_t)target * NT_CONTAINER;
		const uint8_t *ac = asker >= 0 ? t->containers + (size_t)asker * NT_CONTAINER : NULL;
		if (ac && (asker == target || (get32(ac + 88) != 0 && get32(ac + 88) == get32(tc + 88))))
			c = tc;
	}
	int found = c && c[64] != 0;

	memset(reply, 0, DNS_HEADER);
	reply[0] = q[0], reply[1] = q[1];
	reply[2] = 0x84 | (q[2] & 0x01); /* a response, authoritative, RD copied */
	reply[3] = found ? 0 : RCODE_NXDOMAIN;
	reply[5] = 1;
	memcpy(reply + DNS_HEADER, q + DNS_HEADER, question);
	size_t n = DNS_HEADER + question;
	const uint8_t *addr = NULL;
	size_t alen = 0;
	if (found && qtype == TYPE_A && (c[64] & 1))
		addr = c + 68, alen = 4;
	else if (found && qtype == TYPE_AAAA && (c[64] & 2))
		addr = c + 72, alen = 16;
	if (addr) {
		const uint8_t rr[12] = {0xC0, DNS_HEADER, 0, (uint8_t)qtype, 0, 1, 0, 0, 0, TTL, 0, (uint8_t)alen};
		memcpy(reply + n, rr, sizeof(rr));
		memcpy(reply + n + sizeof(rr), addr, alen);
		n += sizeof(rr) + alen;
		reply[7] = 1;
	}
	return (int)n;
}
