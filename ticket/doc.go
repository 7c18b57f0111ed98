// Package ticket holds the tickets of the transfer daemon: the schema the
// engine sends (Parse), the in-memory Store with expiry, extension,
// authorization and cancellation, and the bookkeeping of ongoing operations
// and connections that the status report (active, transferred, idle_time,
// connections) is made from.
//
// Times are whole seconds of the monotonic clock, as in the reference
// daemon, so "expires" in a status report is a monotonic timestamp, not wall
// clock time.
//
// Ticket ids are secrets (whoever knows one can read or write the image):
// log them only through Redact. This package does not import net/http; the
// daemon maps its errors to HTTP status codes.
package ticket
