// Package engine is the imageio client of the oVirt engine REST API, built
// on the go-ovirt SDK (github.com/ovirt/go-ovirt, imported as ovirtsdk4).
// It creates and inspects disks and runs image transfers: create, wait for
// the transferring phase, then finalize or cancel. It never prints; logging
// goes to Config.Logf, and failures are typed errors (ErrStorageDomainNotFound,
// ErrDiskNotFound, ErrTransferNotFound, ErrAuth, ErrTimeout, *PhaseError,
// *FinalizeError) wrapping the SDK error with context.
//
// # Flow
//
//	c, err := engine.Connect(ctx, engine.Config{URL: "https://engine", Username: "admin@internal", Password: pw, CAFile: ca})
//	defer c.Close()
//	spec := engine.PlanDisk(engine.ImageFacts{Format: "qcow2", VirtualSize: vs, Required: req}, engine.PlanOptions{Name: "disk1", StorageDomain: "data1"})
//	disk, err := c.CreateDisk(ctx, spec)                  // waits until the disk is ok
//	t, err := c.StartTransfer(ctx, engine.TransferSpec{DiskID: disk.ID, Direction: engine.Upload})
//	// ... move the data to t.TransferURL (or t.ProxyURL) ...
//	err = c.Finalize(ctx, t)                              // or c.Cancel on any upload failure
//
// Incremental backup: StartBackup (full, or from a checkpoint), BackupDisks
// (each disk's mode), a download transfer per disk with TransferSpec.BackupID,
// then FinalizeBackup; Checkpoints and RemoveCheckpoint manage the chain.
//
// An upload that fails, or is interrupted, must be cancelled: the engine then
// removes the new disk. A download is always finalized. Both Cancel and
// Finalize should be called with a context that is still live (for example
// context.WithoutCancel(ctx) with a timeout) when the caller's context was
// cancelled by a signal.
//
// # Waiting
//
// Every wait polls with backoff (Config.PollInterval doubling up to
// Config.MaxPollInterval) and is bounded by the caller's context and by the
// matching Config timeout (DiskTimeout, TransferTimeout, FinalizeTimeout).
// Each HTTP request is bounded by Config.Timeout and is aborted when the
// context of the call is done, although the SDK itself has no context
// support (see below).
//
// # Authentication
//
// The SDK fetches an SSO token on the first call and keeps it for the life
// of its connection. An expired token gets HTTP 401 with an HTML page. The
// transport wrapper (below) notes every 401 of an API call, so the Client
// sees it whatever error the SDK made of the page (a GET reports a parse
// error, an action such as finalize a tag mismatch), and it rewrites the
// page as a <fault> so that the SDK reports an *ovirtsdk4.AuthError. After
// a 401 the Client builds a new connection, which logs in again, and
// retries that call once. A failed login, or a second 401, is ErrAuth.
//
// # Keeping stdout clean
//
// The pinned SDK prints "err is ..." to stdout with fmt.Printf whenever it
// reads a response body that holds no XML element: an empty 200 answer to a
// GET or POST, or a plain-text error page from a proxy. That would corrupt
// the CLI's --json output. Swapping os.Stdout is not an option for a library,
// so the Client wraps the SDK's HTTP transport instead: every API response
// passes through a guard that reads the body and, when it has no XML
// element, replaces it with a <fault> document (a 2xx status becomes 502 Bad
// Gateway). The SDK then always sees XML, reports an ordinary error and never
// reaches its Printf. The same wrapper applies the context of the current
// call to the request and logs method, path and status to Config.Logf (never
// headers or bodies, which carry the bearer token and the password).
//
// The SDK keeps its *http.Client in an unexported field; the wrapper is
// installed through reflection right after the connection is built, and
// Connect fails with an error (never a panic) if the pinned SDK's layout
// ever changes. The SDK's own LogFunc is never set, because it dumps whole
// requests including the Authorization header.
//
// A Client is safe for concurrent use; SDK calls are serialized.
package engine
