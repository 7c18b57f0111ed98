// Package control is the tickets API of imageiod: the server handlers the
// daemon mounts on its control service (a Unix socket or a loopback TCP
// port), and the Client used by imageioctl and the engine simulator.
//
// The wire format is the reference daemon's: PUT /tickets/{id} with the
// ticket JSON, GET for its status, PATCH {"timeout": N} to extend it and
// DELETE to cancel and remove it; DELETE /tickets/ removes every ticket.
package control
