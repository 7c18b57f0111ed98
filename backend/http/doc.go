// Package http is a backend.Backend over the images API of an imageio
// daemon: our imageiod or oVirt's reference daemon. It only uses the wire
// API (OPTIONS, GET with Range, PUT with Content-Range, PATCH zero/flush,
// GET extents and checksum), so it works against either.
//
// Open sends OPTIONS first to learn the features and the number of readers
// and writers the daemon allows. When the daemon runs on this host and
// reports a local Unix socket, the backend switches to plain HTTP over that
// socket, as the reference client does. When the transfer URL cannot be
// reached (connect or TLS failure), Open falls back to Options.ProxyURL and
// says so through Options.Notify.
//
// Every request that fails in a transient way (connection reset or refused,
// EOF, a 5xx status other than 501 and 507) is retried a bounded number of
// times with exponential backoff. A retry resends only that request's range:
// a GET resumes after the bytes already received, and a PUT sends its range
// again, which needs a source it can rewind (see Backend.WriteFrom).
//
// Ticket ids travel in URL paths; this package's errors and messages
// replace the id with "***" where it names the ticket: as a segment of a
// URL path and in the daemon's "No such ticket ID" text. The same
// characters elsewhere in a message are left alone.
package http
