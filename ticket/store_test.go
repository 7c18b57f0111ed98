package ticket

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeClock is a settable clock in seconds.
type fakeClock struct{ now atomic.Int64 }

func (c *fakeClock) Now() int64        { return c.now.Load() }
func (c *fakeClock) Advance(sec int64) { c.now.Add(sec) }

func newTestStore(t *testing.T, maxConns int) (*Store, *fakeClock) {
	t.Helper()
	c := &fakeClock{}
	c.now.Store(1000)
	return NewStore(Config{MaxConnections: maxConns, Clock: c.Now}), c
}

func addTicket(t *testing.T, s *Store, doc string) *Ticket {
	t.Helper()
	tk, err := Parse([]byte(doc), ParseOptions{InactivityTimeout: 60})
	if err != nil {
		t.Fatal(err)
	}
	s.Add(tk)
	return tk
}

type closer struct{ n atomic.Int32 }

func (c *closer) Close() error { c.n.Add(1); return nil }

func TestRedact(t *testing.T) {
	tests := map[string]string{
		"0123456789abcdef": "01234567...",
		"short":            "sh...",
		"ab":               "...",
		"":                 "...",
	}
	for in, want := range tests {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAuthorize(t *testing.T) {
	s, clock := newTestStore(t, 0)
	addTicket(t, s, `{"uuid": "ticket-read-0001", "size": 100, "url": "nbd:x", "ops": ["read"], "timeout": 10, "transfer_id": "tr-1"}`)
	addTicket(t, s, `{"uuid": "ticket-write-0001", "size": 100, "url": "nbd:x", "ops": ["write"], "timeout": 10, "transfer_id": "tr-2"}`)

	tests := []struct {
		name, id, op string
		advance      int64
		want         error
		reason       string
	}{
		{"read ok", "ticket-read-0001", "read", 0, nil, ""},
		{"write implies read", "ticket-write-0001", "read", 0, nil, ""},
		{"read forbids write", "ticket-read-0001", "write", 0, ErrForbidden, "Transfer=tr-1 forbids write"},
		{"missing", "nope", "read", 0, ErrNotFound, "No such ticket nope"},
		{"expired", "ticket-read-0001", "read", 10, ErrExpired, "Transfer=tr-1 expired"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock.Advance(tc.advance)
			defer clock.Advance(-tc.advance)
			_, err := s.Authorize(tc.id, tc.op)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Authorize = %v, want %v", err, tc.want)
			}
			if tc.want == nil {
				return
			}
			var ae *AuthError
			if !errors.As(err, &ae) {
				t.Fatalf("error %T is not *AuthError", err)
			}
			if ae.Reason != tc.reason {
				t.Errorf("reason = %q, want %q", ae.Reason, tc.reason)
			}
			if want := "You are not allowed to access this resource: " + tc.reason; ae.ClientMessage() != want {
				t.Errorf("client message = %q, want %q", ae.ClientMessage(), want)
			}
		})
	}
}

func TestErrorsDoNotRevealID(t *testing.T) {
	s, _ := newTestStore(t, 0)
	_, err := s.Authorize("secret-ticket-id-0123456789", "read")
	if got := err.Error(); got != "not authorized: no such ticket secret-t..." {
		t.Errorf("Error() = %q", got)
	}
}

func TestTouchExtendExpiry(t *testing.T) {
	s, clock := newTestStore(t, 0)
	tk := addTicket(t, s, `{"uuid": "ticket-0000000001", "size": 100, "url": "nbd:x", "ops": ["read"], "timeout": 10}`)
	if got := tk.Status().Expires; got != 1010 {
		t.Fatalf("expires = %d, want 1010", got)
	}
	clock.Advance(5)
	if err := s.Extend(tk.UUID, 100); err != nil {
		t.Fatal(err)
	}
	if got := tk.Status().Expires; got != 1105 {
		t.Fatalf("after extend expires = %d, want 1105", got)
	}
	clock.Advance(3)
	if got := tk.Status().IdleTime; got != 8 {
		t.Errorf("idle_time = %d, want 8", got)
	}
	tk.Touch() // back to the original timeout
	if got := tk.Status().Expires; got != 1018 {
		t.Fatalf("after touch expires = %d, want 1018", got)
	}
	clock.Advance(10)
	if _, err := s.Authorize(tk.UUID, "read"); !errors.Is(err, ErrExpired) {
		t.Fatalf("Authorize after expiry = %v, want ErrExpired", err)
	}
	if err := s.Extend("missing", 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("Extend missing = %v, want ErrNotFound", err)
	}
}

func TestTransferred(t *testing.T) {
	s, clock := newTestStore(t, 0)
	tk := addTicket(t, s, `{"uuid": "ticket-0000000001", "size": 1000, "url": "nbd:x", "ops": ["write"], "timeout": 10}`)
	ctx := context.Background()
	run := func(off, n int64) {
		op, _, err := tk.Begin(ctx, off)
		if err != nil {
			t.Fatal(err)
		}
		op.Add(n)
		if err := op.End(); err != nil {
			t.Fatal(err)
		}
	}
	run(0, 100)
	run(50, 100)  // overlaps
	run(500, 100) // disjoint
	ongoing, _, err := tk.Begin(ctx, 150)
	if err != nil {
		t.Fatal(err)
	}
	ongoing.Add(10)
	clock.Advance(7)
	st := tk.Status()
	if st.Transferred == nil || *st.Transferred != 260 {
		t.Errorf("transferred = %v, want 260", st.Transferred)
	}
	if !st.Active || st.IdleTime != 0 {
		t.Errorf("active = %v idle_time = %d, want true 0", st.Active, st.IdleTime)
	}
	if err := ongoing.End(); err != nil {
		t.Fatal(err)
	}
	st = tk.Status()
	if st.Active || *st.Transferred != 260 || st.Expires != 1017 {
		t.Errorf("after end: active %v transferred %d expires %d, want false 260 1017", st.Active, *st.Transferred, st.Expires)
	}

	rw := addTicket(t, s, `{"uuid": "ticket-0000000002", "size": 1000, "url": "nbd:x", "ops": ["read", "write"], "timeout": 10}`)
	if st := rw.Status(); st.Transferred != nil {
		t.Errorf("read-write ticket reports transferred %d", *st.Transferred)
	}
}

func TestStatusJSON(t *testing.T) {
	s, _ := newTestStore(t, 0)
	tk := addTicket(t, s, `{"uuid": "ticket-0000000001", "size": 1000, "url": "nbd:unix:/sock", "ops": ["read"], "timeout": 10, "transfer_id": "tr", "filename": "f.raw"}`)
	got, err := jsonMarshal(tk.Status())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"active":false,"canceled":false,"connections":0,"expires":1010,"idle_time":0,` +
		`"inactivity_timeout":60,"ops":["read"],"size":1000,"sparse":false,"dirty":false,"timeout":10,` +
		`"url":"nbd:unix:/sock","uuid":"ticket-0000000001","transfer_id":"tr","filename":"f.raw","transferred":0}`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("status JSON (-want +got):\n%s", diff)
	}
}

func TestConnections(t *testing.T) {
	s, _ := newTestStore(t, 2)
	tk := addTicket(t, s, `{"uuid": "ticket-0000000001", "size": 1000, "url": "nbd:x", "ops": ["read"], "timeout": 10}`)
	c1, c2 := &closer{}, &closer{}
	if err := tk.Attach(1, c1); err != nil {
		t.Fatal(err)
	}
	if err := tk.Attach(2, c2); err != nil {
		t.Fatal(err)
	}
	if err := tk.Attach(3, &closer{}); !errors.Is(err, ErrTooManyConnections) {
		t.Fatalf("third Attach = %v, want ErrTooManyConnections", err)
	}
	if got := tk.Status().Connections; got != 2 {
		t.Errorf("connections = %d, want 2", got)
	}
	tk.Detach(2)
	if err := s.Cancel(context.Background(), tk.UUID, time.Second); err != nil {
		t.Fatal(err)
	}
	if c1.n.Load() != 1 || c2.n.Load() != 0 {
		t.Errorf("closed c1 %d c2 %d times, want 1 and 0", c1.n.Load(), c2.n.Load())
	}
	if _, err := s.Get(tk.UUID); !errors.Is(err, ErrNotFound) {
		t.Errorf("ticket still there after cancel: %v", err)
	}
	if err := tk.Attach(4, &closer{}); !errors.Is(err, ErrCanceled) {
		t.Errorf("Attach after cancel = %v, want ErrCanceled", err)
	}
}

func TestCancelStopsOngoing(t *testing.T) {
	s, _ := newTestStore(t, 0)
	tk := addTicket(t, s, `{"uuid": "ticket-0000000001", "size": 1000, "url": "nbd:x", "ops": ["read"], "timeout": 10}`)
	op, ctx, err := tk.Begin(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var endErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done() // a transfer loop notices at its next chunk
		endErr = op.End()
	}()
	if err := s.Cancel(context.Background(), tk.UUID, 10*time.Second); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	wg.Wait()
	if !errors.Is(endErr, ErrCanceled) {
		t.Errorf("End after cancel = %v, want ErrCanceled", endErr)
	}
	if _, _, err := tk.Begin(context.Background(), 0); !errors.Is(err, ErrCanceled) {
		t.Errorf("Begin after cancel = %v, want ErrCanceled", err)
	}
}

func TestCancelTimeout(t *testing.T) {
	s, _ := newTestStore(t, 0)
	tk := addTicket(t, s, `{"uuid": "ticket-0000000001", "size": 1000, "url": "nbd:x", "ops": ["read"], "timeout": 10, "transfer_id": "tr-9"}`)
	op, _, err := tk.Begin(context.Background(), 0) // never looks at its context
	if err != nil {
		t.Fatal(err)
	}
	err = s.Cancel(context.Background(), tk.UUID, 50*time.Millisecond)
	var ce *CancelTimeoutError
	if !errors.Is(err, ErrCancelTimeout) || !errors.As(err, &ce) {
		t.Fatalf("Cancel = %v, want ErrCancelTimeout", err)
	}
	if ce.Error() != "Timeout cancelling transfer tr-9" {
		t.Errorf("message = %q", ce.Error())
	}
	if _, err := s.Get(tk.UUID); err != nil {
		t.Fatalf("ticket removed after cancel timeout: %v", err)
	}
	if !tk.Status().Canceled {
		t.Error("ticket not marked canceled")
	}
	if _, err := s.Authorize(tk.UUID, "read"); !errors.Is(err, ErrCanceled) {
		t.Errorf("Authorize = %v, want ErrCanceled", err)
	}
	// Timeout 0 does not wait and leaves the ticket.
	if err := s.Cancel(context.Background(), tk.UUID, 0); err != nil {
		t.Errorf("Cancel with timeout 0 = %v", err)
	}
	op.End()
	if err := s.Cancel(context.Background(), tk.UUID, time.Second); err != nil {
		t.Fatalf("retry Cancel: %v", err)
	}
	if s.Len() != 0 {
		t.Errorf("store has %d tickets, want 0", s.Len())
	}
	// Missing ticket: nothing to do.
	if err := s.Cancel(context.Background(), "missing", time.Second); err != nil {
		t.Errorf("Cancel missing = %v", err)
	}
}

func TestReplaceAndClear(t *testing.T) {
	s, _ := newTestStore(t, 0)
	old := addTicket(t, s, `{"uuid": "ticket-0000000001", "size": 1, "url": "nbd:x", "ops": ["read"], "timeout": 10}`)
	addTicket(t, s, `{"uuid": "ticket-0000000001", "size": 2, "url": "nbd:x", "ops": ["read"], "timeout": 10}`)
	got, err := s.Get(old.UUID)
	if err != nil || got.Size != 2 {
		t.Fatalf("Get after replace = %v, %v; want size 2", got, err)
	}
	if old.Canceled() {
		t.Error("replaced ticket was canceled")
	}
	addTicket(t, s, `{"uuid": "ticket-0000000002", "size": 1, "url": "nbd:x", "ops": ["read"], "timeout": 10}`)
	s.Remove("ticket-0000000002")
	if s.Len() != 1 {
		t.Fatalf("Len after Remove = %d, want 1", s.Len())
	}
	s.Clear()
	if s.Len() != 0 {
		t.Errorf("Len after Clear = %d, want 0", s.Len())
	}
}

func TestConcurrentOps(t *testing.T) {
	s, _ := newTestStore(t, 0)
	tk := addTicket(t, s, `{"uuid": "ticket-0000000001", "size": 1000000, "url": "nbd:x", "ops": ["read"], "timeout": 10}`)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				op, _, err := tk.Begin(context.Background(), int64((w*100+i)*1000))
				if err != nil {
					t.Error(err)
					return
				}
				op.Add(1000)
				_ = tk.Status()
				if err := op.End(); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if got := *tk.Status().Transferred; got != 800000 {
		t.Errorf("transferred = %d, want 800000", got)
	}
}

func jsonMarshal(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}
