package commands

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imageio/imageio/enginesim"
)

// TestEngineTokenExpiry runs uploads and downloads against an engine whose
// SSO tokens expire after 300 ms, so that every run sees its token expire
// (a new disk alone stays locked for longer). Whichever engine call gets
// the 401, a GET or an action such as finalize, the client logs in again
// and the command succeeds. The runs are repeated because where the
// expiry falls varies from run to run; before re-login covered actions,
// about one upload in five failed here.
func TestEngineTokenExpiry(t *testing.T) {
	const runs = 4
	sim := startSim(t, enginesim.Config{Faults: enginesim.Faults{TokenLifetime: 300 * time.Millisecond}})
	dir := t.TempDir()
	qcow := sampleImage(t, dir, "disk.qcow2", "qcow2")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for i := range runs {
		if ctx.Err() != nil {
			t.Fatalf("out of time after %d runs", i)
		}
		before := len(sim.Requests())
		_, up, stderr, code := jsonRun(t, ctx, append([]string{"upload", qcow, "-s", "data1"}, engineFlags(sim)...)...)
		if code != 0 {
			t.Fatalf("run %d: upload: exit %d: %s", i, code, stderr)
		}
		if up.Result != "ok" || up.DiskID == "" {
			t.Fatalf("run %d: upload result %+v", i, up)
		}
		out := filepath.Join(t.TempDir(), "out.qcow2")
		_, down, stderr, code := jsonRun(t, ctx, append([]string{"download", "--disk-id", up.DiskID, out}, engineFlags(sim)...)...)
		if code != 0 {
			t.Fatalf("run %d: download: exit %d: %s", i, code, stderr)
		}
		if down.Result != "ok" || down.DiskID != up.DiskID {
			t.Fatalf("run %d: download result %+v", i, down)
		}
		compareImages(t, qcow, out)

		var rejected, actions int
		for _, r := range sim.Requests()[before:] {
			if r.Status != 401 {
				continue
			}
			rejected++
			if r.Method == "POST" && strings.HasPrefix(r.Path, "/ovirt-engine/api/imagetransfers/") {
				actions++
			}
		}
		t.Logf("run %d: %d calls rejected with 401, %d of them transfer actions", i, rejected, actions)
		if rejected == 0 {
			t.Errorf("run %d: no call was rejected; the token did not expire during the run", i)
		}
	}
}
