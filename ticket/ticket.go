package ticket

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
)

// Errors returned by the Store and by Ticket methods. Authorization
// failures are *AuthError values wrapping ErrNotFound, ErrExpired,
// ErrCanceled or ErrForbidden.
var (
	ErrNotFound           = errors.New("no such ticket")
	ErrExpired            = errors.New("ticket expired")
	ErrCanceled           = errors.New("ticket canceled")
	ErrForbidden          = errors.New("operation not allowed by ticket")
	ErrCancelTimeout      = errors.New("timeout cancelling transfer")
	ErrTooManyConnections = errors.New("too many connections for ticket")
)

// Redact returns the first 8 characters of a ticket id followed by "...",
// for logs and errors that must not reveal the whole secret.
func Redact(id string) string {
	r := []rune(id)
	if len(r) <= 8 {
		// Short ids are not secret enough to redact usefully; still do
		// not print them whole.
		if len(r) <= 2 {
			return "..."
		}
		return string(r[:len(r)/2]) + "..."
	}
	return string(r[:8]) + "..."
}

// AuthError is an authorization failure. Reason is the reference daemon's
// text for the client ("No such ticket <id>", "Transfer=<id> expired");
// Error never contains the ticket id.
type AuthError struct {
	Reason string
	err    error // ErrNotFound, ErrExpired, ErrCanceled or ErrForbidden
	id     string
}

func (e *AuthError) Error() string {
	if errors.Is(e.err, ErrNotFound) {
		return fmt.Sprintf("not authorized: no such ticket %s", Redact(e.id))
	}
	return "not authorized: " + e.Reason
}

// Unwrap returns the sentinel the error stands for.
func (e *AuthError) Unwrap() error { return e.err }

// ClientMessage is the 403 body of the reference daemon.
func (e *AuthError) ClientMessage() string {
	return "You are not allowed to access this resource: " + e.Reason
}

// CancelTimeoutError is returned when a ticket could not be canceled in time.
type CancelTimeoutError struct{ TransferID string }

func (e *CancelTimeoutError) Error() string {
	return "Timeout cancelling transfer " + e.TransferID
}

// Unwrap makes errors.Is(err, ErrCancelTimeout) true.
func (e *CancelTimeoutError) Unwrap() error { return ErrCancelTimeout }

// Ticket is a transfer ticket: the fields of the schema (read-only after
// Parse) and the live state the Store keeps. All methods are safe for
// concurrent use.
type Ticket struct {
	UUID              string
	Size              int64
	URL               string
	Ops               []string
	Timeout           int64
	InactivityTimeout int64
	Sparse            bool
	Dirty             bool
	TransferID        string
	Filename          string

	clock          func() int64
	maxConnections int

	// mu guards the fields that follow.
	mu         sync.Mutex
	expires    int64
	accessTime int64
	canceled   bool
	ongoing    map[*Op]struct{}
	completed  rangeList
	conns      map[uint64]io.Closer
	unused     chan struct{} // closed when canceled and no op is ongoing
}

// May reports whether the ticket allows op; write implies read.
func (t *Ticket) May(op string) bool {
	if op == OpRead {
		return slices.Contains(t.Ops, OpRead) || slices.Contains(t.Ops, OpWrite)
	}
	return slices.Contains(t.Ops, op)
}

// Touch records client activity: the ticket now expires Timeout seconds
// from now.
func (t *Ticket) Touch() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.touchLocked()
}

func (t *Ticket) touchLocked() {
	now := t.clock()
	t.expires = now + t.Timeout
	t.accessTime = now
}

// Extend makes the ticket expire timeout seconds from now. It does not
// change Timeout, so the next Touch uses the original timeout again.
func (t *Ticket) Extend(timeout int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expires = t.clock() + timeout
}

// Canceled reports whether the ticket was canceled.
func (t *Ticket) Canceled() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.canceled
}

// authorize checks that op is allowed now.
func (t *Ticket) authorize(op string) error {
	t.mu.Lock()
	canceled, expires := t.canceled, t.expires
	t.mu.Unlock()
	switch {
	case canceled:
		return &AuthError{Reason: fmt.Sprintf("Transfer=%s was canceled", t.TransferID), err: ErrCanceled, id: t.UUID}
	case expires <= t.clock():
		return &AuthError{Reason: fmt.Sprintf("Transfer=%s expired", t.TransferID), err: ErrExpired, id: t.UUID}
	case !t.May(op):
		return &AuthError{Reason: fmt.Sprintf("Transfer=%s forbids %s", t.TransferID, op), err: ErrForbidden, id: t.UUID}
	}
	return nil
}

func (t *Ticket) canceledError() error {
	return &AuthError{Reason: fmt.Sprintf("Transfer %s was canceled", t.TransferID), err: ErrCanceled, id: t.UUID}
}

// Attach registers a connection using the ticket; c is closed if the
// ticket is canceled while the connection is idle, and must tolerate a
// second Close. It fails when the ticket was canceled or already has its
// maximum number of connections.
func (t *Ticket) Attach(id uint64, c io.Closer) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.canceled {
		return t.canceledError()
	}
	if _, ok := t.conns[id]; ok {
		t.conns[id] = c
		return nil
	}
	if t.maxConnections > 0 && len(t.conns) >= t.maxConnections {
		return fmt.Errorf("transfer %s has %d connections: %w", t.TransferID, len(t.conns), ErrTooManyConnections)
	}
	t.conns[id] = c
	return nil
}

// Detach removes a connection registered by Attach. It does not close it.
func (t *Ticket) Detach(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, id)
}

// Op is an ongoing operation on a ticket, from Begin to End.
type Op struct {
	t      *Ticket
	offset int64
	done   atomic.Int64
	cancel context.CancelFunc
}

// Begin starts an operation on the byte range starting at offset. The
// returned context is canceled when the ticket is canceled or ctx is done;
// the operation must stop at its next chunk then. It fails with an
// *AuthError when the ticket was canceled.
func (t *Ticket) Begin(ctx context.Context, offset int64) (*Op, context.Context, error) {
	opCtx, cancel := context.WithCancel(ctx)
	op := &Op{t: t, offset: offset, cancel: cancel}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.canceled {
		cancel()
		return nil, nil, t.canceledError()
	}
	t.ongoing[op] = struct{}{}
	return op, opCtx, nil
}

// Add records n more bytes done by the operation.
func (o *Op) Add(n int64) { o.done.Add(n) }

// Done returns the bytes done so far.
func (o *Op) Done() int64 { return o.done.Load() }

// End finishes the operation: the ticket is touched and the bytes done
// count as transferred. It returns an *AuthError when the ticket was
// canceled meanwhile, as the reference does; the caller reports it instead
// of success.
func (o *Op) End() error {
	t := o.t
	o.cancel()
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.ongoing, o)
	if t.canceled {
		if len(t.ongoing) == 0 && t.unused != nil {
			close(t.unused)
			t.unused = nil
		}
		return t.canceledError()
	}
	if len(t.Ops) == 1 {
		t.completed.add(o.offset, o.offset+o.done.Load())
	}
	t.touchLocked()
	return nil
}

// Status is the ticket report of GET /tickets/{id}, with the reference's
// keys in its order.
type Status struct {
	Active            bool     `json:"active"`
	Canceled          bool     `json:"canceled"`
	Connections       int      `json:"connections"`
	Expires           int64    `json:"expires"`
	IdleTime          int64    `json:"idle_time"`
	InactivityTimeout int64    `json:"inactivity_timeout"`
	Ops               []string `json:"ops"`
	Size              int64    `json:"size"`
	Sparse            bool     `json:"sparse"`
	Dirty             bool     `json:"dirty"`
	Timeout           int64    `json:"timeout"`
	URL               string   `json:"url"`
	UUID              string   `json:"uuid"`
	TransferID        string   `json:"transfer_id,omitempty"`
	Filename          string   `json:"filename,omitempty"`
	// Transferred is reported for tickets with one operation only.
	Transferred *int64 `json:"transferred,omitempty"`
}

// Status reports the ticket's state.
func (t *Ticket) Status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := Status{
		Active:            len(t.ongoing) > 0,
		Canceled:          t.canceled,
		Connections:       len(t.conns),
		Expires:           t.expires,
		InactivityTimeout: t.InactivityTimeout,
		Ops:               slices.Clone(t.Ops),
		Size:              t.Size,
		Sparse:            t.Sparse,
		Dirty:             t.Dirty,
		Timeout:           t.Timeout,
		URL:               t.URL,
		UUID:              t.UUID,
		TransferID:        t.TransferID,
		Filename:          t.Filename,
	}
	if !s.Active {
		s.IdleTime = t.clock() - t.accessTime
	}
	if len(t.Ops) == 1 {
		l := slices.Clone(t.completed)
		for op := range t.ongoing {
			l.add(op.offset, op.offset+op.done.Load())
		}
		n := l.sum()
		s.Transferred = &n
	}
	return s
}

// cancel marks the ticket canceled and stops its ongoing operations. It
// returns a channel closed when no operation is ongoing, or nil if none is.
func (t *Ticket) cancelOps() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.canceled = true
	if len(t.ongoing) == 0 {
		return nil
	}
	for op := range t.ongoing {
		op.cancel()
	}
	if t.unused == nil {
		t.unused = make(chan struct{})
	}
	return t.unused
}

// closeConns closes the connections' resources (the connections are idle
// once no operation is ongoing).
func (t *Ticket) closeConns() {
	t.mu.Lock()
	conns := make([]io.Closer, 0, len(t.conns))
	for _, c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}
