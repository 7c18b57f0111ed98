// Package enginesim is an oVirt engine simulator: the subset of the engine
// REST API (version 4, XML, SSO) that imageio and the oVirt SDKs use to
// upload and download disks, served over HTTPS and backed by real imageiod
// processes, exactly as a host would run them.
//
// Start makes a CA and a server certificate in a state directory, starts an
// imageiod "host" daemon and, unless Config.NoProxy, a second imageiod as
// the engine's proxy (http backend towards the host), and serves the API.
// Disks are files in Config.StorageDir (qcow2 for format cow, raw for
// format raw), created with qemu-img. A transfer serves its disk through a
// private qemu-nbd (package nbdlocal) and adds tickets through the daemons'
// control API (package control); transfer_url is the host daemon,
// proxy_url the proxy. Phases follow the engine: initializing,
// transferring, finalizing_success and finished_success (after verifying
// the volume with qemu-img, as the engine does), cancel paths that remove an
// uploaded disk, the inactivity timeout and its policies, and retention of
// finished transfers before they answer 404. VM backups and checkpoints
// (full and incremental, with qcow2 bitmaps) are supported for any VM id.
//
// Fault knobs (Faults, changeable with Sim.SetFaults) make it misbehave
// like a troubled engine: slow initializing, paused_system, finalize
// failure, a dead transfer_url with a live proxy, expiring SSO tokens (401
// with the engine's HTML page), old-engine removal of finished transfers,
// and empty 200 answers. Every request is recorded for assertions.
//
// Tests use StartTest, which builds cmd/imageiod into the module's tmp/
// directory. The command cmd/enginesim runs a simulator for users; see
// docs/engine.md and man/enginesim.1.
package enginesim
