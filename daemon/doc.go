// Package daemon is the transfer daemon imageiod: the images HTTP API (the
// remote service over HTTPS and the local service over a Unix socket) and
// Daemon, which runs them with the control service of package control from
// one configuration.
//
// The API is wire-compatible with the reference daemon (ovirt-imageio
// 2.5.3): the same paths, status codes, headers, JSON shapes and error
// texts, so its clients work unchanged. docs/daemon.md lists the deliberate
// differences.
//
// Each service is Run(ctx, ln) on an injected listener. A request is
// authorized by its ticket (package ticket); the first authorized request on
// a connection opens a backend for the ticket's URL, which the connection
// keeps until it closes, and raises the connection's idle timeout from 60
// seconds to the ticket's inactivity_timeout. Handlers return errors; one
// function (toHTTPError) turns them into status codes, sending the client
// only the message meant for it.
package daemon
