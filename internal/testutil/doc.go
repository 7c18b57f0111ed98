// Package testutil holds helpers shared by the tests of several packages:
// TLS certificates made in-process, a TestMain wrapper that checks that no
// qemu-nbd process or temporary directory is left behind, sample images with
// data, zero and hole runs, skips for missing external tools, qemu-nbd and
// nbdkit servers on Unix sockets, and a TCP relay that cuts connections.
//
// It is test support only and never part of a program.
package testutil
