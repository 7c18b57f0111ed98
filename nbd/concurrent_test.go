package nbd

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/imageio/imageio/internal/testutil"
)

func TestConcurrent(t *testing.T) {
	const (
		workers = 16
		region  = 1 << 20 // each worker owns one region
		size    = workers * region
		ops     = 15
	)
	for _, tc := range []struct {
		name    string
		format  string
		clients int
	}{
		{"raw one connection", "raw", 1},
		{"qcow2 one connection", "qcow2", 1},
		{"qcow2 four connections", "qcow2", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "disk."+tc.format)
			testutil.RunCommand(t, "qemu-img", "create", "-q", "-f", tc.format, img, fmt.Sprint(size))
			addr := qemuNBD(t, img, tc.format)
			clients := make([]*Client, tc.clients)
			for i := range clients {
				clients[i] = dial(t, addr, Options{})
			}
			model := make([]byte, size)
			g, ctx := errgroup.WithContext(testutil.Context(t))
			for w := 0; w < workers; w++ {
				g.Go(func() error {
					c := clients[w%len(clients)]
					rng := rand.New(rand.NewPCG(uint64(w), 99))
					base := w * region
					mine := model[base : base+region]
					for i := 0; i < ops; i++ {
						n := 1 + rng.IntN(region/4)
						off := rng.IntN(region - n + 1)
						switch rng.IntN(4) {
						case 0, 1:
							p := randomBytes(rng, n)
							if err := c.WriteAt(ctx, p, int64(base+off)); err != nil {
								return err
							}
							copy(mine[off:], p)
						case 2:
							if err := c.Zero(ctx, int64(base+off), int64(n), 0); err != nil {
								return err
							}
							clear(mine[off : off+n])
						case 3:
							if _, err := c.Extents(ctx, int64(base), region); err != nil {
								return err
							}
						}
						p := make([]byte, n)
						if err := c.ReadAt(ctx, p, int64(base+off)); err != nil {
							return err
						}
						if !bytes.Equal(p, mine[off:off+n]) {
							return fmt.Errorf("worker %d: read at %d differs at %d", w, base+off, firstDiff(p, mine[off:off+n]))
						}
					}
					return c.Flush(ctx)
				})
			}
			if err := g.Wait(); err != nil {
				t.Fatal(err)
			}
			// A fresh connection sees everything.
			c := dial(t, addr, Options{})
			got := make([]byte, size)
			if err := c.ReadAt(context.Background(), got, 0); err != nil {
				t.Fatal(err)
			}
			if i := firstDiff(got, model); i >= 0 {
				t.Fatalf("content differs at %d", i)
			}
		})
	}
}
