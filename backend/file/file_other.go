//go:build !linux

package file

import (
	"errors"
	"os"
)

var errUnsupported = errors.New("not supported on this system")

func openFile(path string, flag int, _ bool) (*os.File, bool, error) {
	f, err := os.OpenFile(path, flag, 0)
	return f, false, err
}

func probeBlockSize(*os.File, int64) int { return 1 }

func punchHole(*os.File, int64, int64) error { return errUnsupported }
func zeroRange(*os.File, int64, int64) error { return errUnsupported }
func allocate(*os.File, int64, int64) error  { return errUnsupported }
func zeroOut(*os.File, int64, int64) error   { return errUnsupported }
