// Package transfer is the client copy engine: it moves an image between two
// backend.Backends, driven by the source's extents, with several workers.
// It never prints; progress is reported as data through a callback.
//
// Copy is the core: one producer walks the source extents (split into
// requests of at most Options.MaxRequest bytes) and feeds N workers. Data
// extents are copied, zero extents zeroed (or skipped when the target
// already reads as zeros), holes kept as holes where asked. When the target
// is a backend.StreamWriter (the HTTP backend), each data request is one
// streamed PUT whose body is read from the source in pieces of the
// worker's buffer; when the source is a backend.StreamReader, each is one
// GET written to the target in such pieces; otherwise ReadAt/WriteAt in BufferSize
// chunks. The stream adapters split the buffer into a ring of pieces (4 x
// 1 MiB by default), reading ahead (uploads) or writing behind (downloads)
// in every piece that is not on the network, so several requests are
// queued at the local NBD server per worker. Zero requests are skipped
// where Options.TargetZeros says the target reads as zeros already. Each
// worker has one buffer for the whole copy, mapped outside
// the Go heap on Linux so that it does not raise the garbage collector's
// target. The first error cancels the other workers. One flush ends the
// copy.
//
// HTTP retries resend only the failed request's range: for uploads, the
// reader handed to backend.StreamWriter.WriteFrom is an io.Seeker over the
// source range, which the HTTP backend rewinds before resending; downloads
// resume a GET after the bytes already written.
//
// Upload and Download build on Copy: they open the daemon's image with the
// HTTP backend and the local image through a private qemu-nbd (package
// nbdlocal and backend/nbd), and can verify the result with the block
// checksum of both ends.
package transfer
