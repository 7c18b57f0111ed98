// Package testutil holds helpers shared by the tests of several packages:
// TLS certificates made in-process, a TestMain wrapper that checks that no
// qemu-nbd process or temporary directory is left behind, sample images with
// data, zero and hole runs, and skips for missing external tools.
//
// It is test support only and never part of a program.
package testutil
