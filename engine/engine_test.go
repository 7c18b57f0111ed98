package engine_test

import (
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/imageio/imageio/engine"
	"github.com/imageio/imageio/enginesim"
	"github.com/imageio/imageio/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func connect(t *testing.T, sim *enginesim.Sim) *engine.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := engine.Connect(ctx, engine.Config{
		URL: sim.URL() + "/", Username: sim.Username, Password: sim.Password, CAFile: sim.CAFile(),
		Timeout: 20 * time.Second, DiskTimeout: 20 * time.Second, TransferTimeout: 20 * time.Second,
		PollInterval: 20 * time.Millisecond, MaxPollInterval: 200 * time.Millisecond, Logf: t.Logf,
	})
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// captureStdout runs fn with os.Stdout redirected and returns what was
// written to it.
func captureStdout(t *testing.T, fn func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	func() {
		defer func() { os.Stdout = saved }()
		fn()
	}()
	w.Close()
	out := <-done
	r.Close()
	return out
}

// TestStdoutGuard: a 200 answer with an empty body makes the pinned SDK
// print "err is EOF" to stdout; the client must keep stdout clean and
// return an error.
func TestStdoutGuard(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{})
	c := connect(t, sim)
	sim.SetFaults(enginesim.Faults{EmptyResponses: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	out := captureStdout(t, func() {
		_, err := c.Disk(ctx, "00000000-0000-0000-0000-000000000000")
		errs = append(errs, err)
		_, err = c.StorageDomain(ctx, "data1")
		errs = append(errs, err)
		_, err = c.Transfer(ctx, "00000000-0000-0000-0000-000000000000")
		errs = append(errs, err)
	})
	if out != "" {
		t.Errorf("stdout got %q, want nothing", out)
	}
	for i, err := range errs {
		if err == nil {
			t.Errorf("call %d: got nil error on an empty answer", i)
		}
	}
}

func TestContextCanceled(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{InitDelay: time.Minute})
	c := connect(t, sim)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	spec, err := engine.PlanDisk(engine.ImageFacts{Format: "raw", VirtualSize: 1 << 20}, engine.PlanOptions{Name: "d", StorageDomain: "data1"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.CreateDisk(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	// The transfer stays initializing; cancelling the context stops the
	// wait, and StartTransfer cancels the transfer before returning.
	sctx, scancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer scancel()
	_, err = c.StartTransfer(sctx, engine.TransferSpec{DiskID: d.ID, Direction: engine.Upload})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("StartTransfer: %v, want context.DeadlineExceeded", err)
	}
	if _, err := c.Disk(ctx, d.ID); !errors.Is(err, engine.ErrDiskNotFound) {
		t.Errorf("disk after cancelled upload start: %v, want ErrDiskNotFound", err)
	}
}

func TestTransferTimeout(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{InitDelay: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := engine.Connect(ctx, engine.Config{
		URL: sim.URL(), Username: sim.Username, Password: sim.Password, CAFile: sim.CAFile(),
		TransferTimeout: 500 * time.Millisecond, PollInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, err := c.CreateDisk(ctx, engine.DiskSpec{Name: "d", StorageDomain: "data1", Format: "qcow2", ProvisionedSize: 1 << 20, Sparse: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.StartTransfer(ctx, engine.TransferSpec{DiskID: d.ID, Direction: engine.Download})
	if !errors.Is(err, engine.ErrTimeout) {
		t.Fatalf("StartTransfer: %v, want ErrTimeout", err)
	}
	// A cancelled download leaves the disk ok.
	got, err := c.Disk(ctx, d.ID)
	if err != nil || got.Status != engine.DiskOK {
		t.Errorf("disk after cancelled download: %+v, %v; want ok", got, err)
	}
}

func TestInsecure(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := engine.Connect(ctx, engine.Config{URL: sim.URL(), Username: sim.Username, Password: sim.Password}); err == nil {
		t.Error("Connect without the CA file succeeded")
	}
	c, err := engine.Connect(ctx, engine.Config{URL: sim.URL(), Username: sim.Username, Password: sim.Password, Insecure: true})
	if err != nil {
		t.Fatalf("Connect with Insecure: %v", err)
	}
	c.Close()
}

// TestReloginOnce: when the fresh token is rejected too, the client gives
// up after one new login with ErrAuth.
func TestReloginOnce(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{Faults: enginesim.Faults{TokenLifetime: time.Nanosecond}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := engine.Connect(ctx, engine.Config{URL: sim.URL(), Username: sim.Username, Password: sim.Password, CAFile: sim.CAFile()})
	if !errors.Is(err, engine.ErrAuth) {
		t.Fatalf("Connect with tokens that expire at once: %v, want ErrAuth", err)
	}
	logins := 0
	for _, r := range sim.Requests() {
		if r.Path == "/ovirt-engine/sso/oauth/token" {
			logins++
		}
	}
	if logins != 2 {
		t.Errorf("got %d logins, want 2", logins)
	}
}

// startUpload creates a small disk and starts an upload transfer to it.
func startUpload(t *testing.T, ctx context.Context, c *engine.Client) *engine.Transfer {
	t.Helper()
	d, err := c.CreateDisk(ctx, engine.DiskSpec{Name: "d", StorageDomain: "data1", Format: "raw", ProvisionedSize: 1 << 20, Sparse: true})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := c.StartTransfer(ctx, engine.TransferSpec{DiskID: d.ID, Direction: engine.Upload})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestReloginActions: an expired token on a transfer action (the engine
// answers the POST with its 401 HTML page, which the SDK's action reader
// cannot parse) logs in again and retries the action once, as for GETs.
func TestReloginActions(t *testing.T) {
	tests := []struct {
		name string
		act  func(*engine.Client, context.Context, *engine.Transfer) error
		want string // transfer phase in the simulator afterwards
	}{
		{"extend", (*engine.Client).Extend, "transferring"},
		{"finalize", (*engine.Client).Finalize, "finished_success"},
		{"cancel", (*engine.Client).Cancel, "finished_failure"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sim := enginesim.StartTest(t, enginesim.Config{})
			c := connect(t, sim)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			tr := startUpload(t, ctx, c)
			before := len(sim.Requests())
			sim.ExpireTokens()
			if err := tc.act(c, ctx, tr); err != nil {
				t.Fatalf("%s with an expired token: %v", tc.name, err)
			}
			var logins, actions401 int
			for _, r := range sim.Requests()[before:] {
				if r.Path == "/ovirt-engine/sso/oauth/token" {
					logins++
				}
				if r.Method == "POST" && r.Status == 401 {
					actions401++
				}
			}
			if logins != 1 || actions401 != 1 {
				t.Errorf("got %d logins and %d rejected POSTs, want 1 and 1", logins, actions401)
			}
			if got, _ := sim.Transfer(tr.ID); got != tc.want && !(tc.name == "cancel" && got == "") {
				t.Errorf("transfer phase %q, want %q", got, tc.want)
			}
		})
	}
}

// TestTransferURLsKept: the URLs stay on the Transfer after Finalize and
// Cancel, for callers that report them afterwards.
func TestTransferURLsKept(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{})
	c := connect(t, sim)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, name := range []string{"finalize", "cancel"} {
		t.Run(name, func(t *testing.T) {
			tr := startUpload(t, ctx, c)
			turl, purl := tr.TransferURL, tr.ProxyURL
			if turl == "" || purl == "" {
				t.Fatalf("transferring transfer has URLs %q, %q; want both", turl, purl)
			}
			var err error
			if name == "finalize" {
				err = c.Finalize(ctx, tr)
			} else {
				err = c.Cancel(ctx, tr)
			}
			if err != nil {
				t.Fatal(err)
			}
			if tr.TransferURL != turl || tr.ProxyURL != purl {
				t.Errorf("after %s: URLs %q, %q; want %q, %q", name, tr.TransferURL, tr.ProxyURL, turl, purl)
			}
		})
	}
}
