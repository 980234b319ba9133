package network

// #include <stdlib.h>
// #include <string.h>
// #include "nametable.h"
import "C"

import (
	"errors"
	"net/netip"
	"unsafe"
)

// answerC is the name server's own answer (nametable.c's nt_parse and
// nt_answer) to query from client with table, or ok false for none. The
// tests compare it with the Go resolver's and fuzz it; it is here because
// cgo is not allowed in test files. Both inputs are copied to buffers of
// their exact size, so a read past their end is one (of the address
// sanitizer under go test -asan).
func answerC(table, query []byte, client netip.Addr) (reply []byte, ok bool, err error) {
	tb, qb := cCopy(table), cCopy(query)
	defer C.free(tb)
	defer C.free(qb)
	var t C.struct_nametable
	if C.nt_parse(&t, (*C.uint8_t)(tb), C.size_t(len(table))) != 0 {
		return nil, false, errors.New("not a name table")
	}
	c := client.As16()
	cb := cCopy(c[:])
	defer C.free(cb)
	out := (*C.uint8_t)(C.malloc(C.NT_REPLY_MAX))
	defer C.free(unsafe.Pointer(out))
	n := C.nt_answer(&t, (*C.uint8_t)(qb), C.size_t(len(query)), (*C.uint8_t)(cb), out)
	if n < 0 {
		return nil, false, nil
	}
	if n > C.NT_REPLY_MAX {
		return nil, false, errors.New("a reply longer than NT_REPLY_MAX")
	}
	return C.GoBytes(unsafe.Pointer(out), n), true, nil
}

// cCopy is b in C memory of its exact size (one byte for none).
func cCopy(b []byte) unsafe.Pointer {
	p := C.malloc(C.size_t(max(len(b), 1)))
	if len(b) > 0 {
		C.memcpy(p, unsafe.Pointer(&b[0]), C.size_t(len(b)))
	}
	return p
}
