package ticket

import (
	"context"
	"io"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Config configures a Store.
type Config struct {
	// MaxConnections limits the connections one ticket may use at once
	// ([daemon] max_connections); 0 means no limit.
	MaxConnections int
	// Clock returns the current time in whole seconds. Nil means the
	// monotonic clock (CLOCK_MONOTONIC), as the reference daemon uses.
	Clock func() int64
}

// MonotonicClock returns CLOCK_MONOTONIC in whole seconds, the clock of
// Python's time.monotonic().
func MonotonicClock() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return int64(time.Since(processStart) / time.Second)
	}
	return ts.Sec
}

var processStart = time.Now()

// Store holds the tickets of a daemon in memory. It is safe for concurrent
// use.
type Store struct {
	cfg Config

	// mu guards the fields that follow. Lock order: Store.mu, then
	// Ticket.mu.
	mu      sync.Mutex
	tickets map[string]*Ticket
}

// NewStore returns an empty store.
func NewStore(cfg Config) *Store {
	if cfg.Clock == nil {
		cfg.Clock = MonotonicClock
	}
	return &Store{cfg: cfg, tickets: make(map[string]*Ticket)}
}

// Add starts the life of a parsed ticket: it expires Timeout seconds from
// now. A ticket with the same uuid is replaced without being canceled, as
// the reference daemon does.
func (s *Store) Add(t *Ticket) {
	t.clock = s.cfg.Clock
	t.maxConnections = s.cfg.MaxConnections
	t.ongoing = make(map[*Op]struct{})
	t.conns = make(map[uint64]io.Closer)
	now := t.clock()
	t.expires = now + t.Timeout
	t.accessTime = now
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tickets[t.UUID] = t
}

// Get returns the ticket id or ErrNotFound.
func (s *Store) Get(id string) (*Ticket, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tickets[id]
	if !ok {
		return nil, ErrNotFound
	}
	return t, nil
}

// Len returns the number of tickets.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tickets)
}

// Extend makes ticket id expire timeout seconds from now.
func (s *Store) Extend(id string, timeout int64) error {
	t, err := s.Get(id)
	if err != nil {
		return err
	}
	t.Extend(timeout)
	return nil
}

// Authorize returns ticket id if it allows op now, or an *AuthError.
func (s *Store) Authorize(id, op string) (*Ticket, error) {
	t, err := s.Get(id)
	if err != nil {
		return nil, &AuthError{Reason: "No such ticket " + id, err: ErrNotFound, id: id}
	}
	if err := t.authorize(op); err != nil {
		return nil, err
	}
	return t, nil
}

// Cancel cancels ticket id and removes it: new requests are refused, ongoing
// operations are asked to stop at their next chunk, and Cancel waits up to
// timeout for them. It then closes the resources of the ticket's idle
// connections and removes the ticket. On timeout it returns a
// *CancelTimeoutError (ErrCancelTimeout) and the canceled ticket stays until
// a later Cancel succeeds. With timeout 0 it does not wait: a ticket with
// ongoing operations stays, canceled, and Cancel returns nil. A missing
// ticket is not an error.
func (s *Store) Cancel(ctx context.Context, id string, timeout time.Duration) error {
	t, err := s.Get(id)
	if err != nil {
		return nil
	}
	if unused := t.cancelOps(); unused != nil {
		if timeout <= 0 {
			return nil
		}
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		select {
		case <-unused:
		case <-timer.C:
			return &CancelTimeoutError{TransferID: t.TransferID}
		case <-ctx.Done():
			return &CancelTimeoutError{TransferID: t.TransferID}
		}
	}
	t.closeConns()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tickets[id] == t {
		delete(s.tickets, id)
	}
	return nil
}

// Remove deletes ticket id without canceling it.
func (s *Store) Remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tickets, id)
}

// Clear deletes every ticket without canceling them, as DELETE /tickets/
// does in the reference daemon.
func (s *Store) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tickets)
}
