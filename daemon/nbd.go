package daemon

import (
	"context"

	"github.com/imageio/imageio/backend"
	nbdbackend "github.com/imageio/imageio/backend/nbd"
	"github.com/imageio/imageio/config"
	"github.com/imageio/imageio/ticket"
)

// addNBD adds the nbd scheme: one NBD connection per HTTP connection, as
// the reference daemon does.
func addNBD(schemes map[string]Scheme, cfg config.Config) {
	schemes["nbd"] = Scheme{
		Open: func(ctx context.Context, t *ticket.Ticket) (backend.Backend, error) {
			return nbdbackend.Open(ctx, t.URL, nbdbackend.Options{
				ReadOnly: !t.May(ticket.OpWrite),
				Sparse:   t.Sparse,
				Dirty:    t.Dirty,
				// Holes as the reference reports them: from
				// allocation depth only, never for raw.
				HolesFromDepth: true,
			})
		},
		BufferSize: cfg.BackendNBD.BufferSize,
	}
}
