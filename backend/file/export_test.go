package file

// OpenBuffered opens path without O_DIRECT, as when the file system
// refuses it.
func OpenBuffered(path string, opts Options) (*Backend, error) {
	opts.noDirect = true
	return Open(path, opts)
}
