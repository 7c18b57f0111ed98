// Package nbd is a client for the Network Block Device protocol, written in
// pure Go.
//
// It speaks the fixed newstyle handshake (structured replies when the server
// offers them, simple replies otherwise; meta contexts base:allocation,
// qemu:allocation-depth and qemu:dirty-bitmap:NAME; NBD_OPT_GO with block
// size information) and the transmission commands READ, WRITE,
// WRITE_ZEROES, TRIM, FLUSH, BLOCK_STATUS and DISC.
//
// A Client is safe for concurrent use: many requests from many goroutines
// are in flight on one connection at the same time and their replies are
// matched by cookie, so one connection can keep a server busy. WriteFrom
// and ReadTo stream large requests through a small buffer: a write's
// payload from a reader, a read's reply (unfragmented, NBD_CMD_FLAG_DF)
// to a writer. Extents merges the block status contexts into zero/hole
// (or dirty/zero) runs.
//
// The package is hand-written because the libnbd Go bindings cannot be
// had from the Go module proxy: they are built from the libnbd source tree
// and need cgo and the C library.
//
// The protocol is described in the NBD project's doc/proto.md.
package nbd
