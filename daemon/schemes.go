package daemon

import (
	"context"
	"fmt"
	"net/url"

	"github.com/imageio/imageio/backend"
	"github.com/imageio/imageio/backend/file"
	httpbackend "github.com/imageio/imageio/backend/http"
	"github.com/imageio/imageio/config"
	"github.com/imageio/imageio/ticket"
)

// DefaultSchemes returns the backends of imageiod by ticket URL scheme:
// file, nbd, http and https (the proxy backend).
func DefaultSchemes(cfg config.Config) map[string]Scheme {
	httpCA := cfg.BackendHTTP.CAFile
	if httpCA == "" {
		httpCA = cfg.TLS.CAFile
	}
	proxy := Scheme{
		Open: func(ctx context.Context, t *ticket.Ticket) (backend.Backend, error) {
			return httpbackend.Open(ctx, t.URL, httpbackend.Options{
				CAFile:     httpCA,
				BufferSize: cfg.BackendHTTP.BufferSize,
				MaxConns:   1,
				Retries:    -1,
			})
		},
		BufferSize: cfg.BackendHTTP.BufferSize,
	}
	schemes := map[string]Scheme{
		"file": {
			Open: func(ctx context.Context, t *ticket.Ticket) (backend.Backend, error) {
				u, err := url.Parse(t.URL)
				if err != nil {
					return nil, fmt.Errorf("parsing file URL: %w", err)
				}
				return file.Open(u.Path, file.Options{ReadOnly: !t.May(ticket.OpWrite), Sparse: t.Sparse})
			},
			BufferSize: cfg.BackendFile.BufferSize,
		},
		"http":  proxy,
		"https": proxy,
	}
	addNBD(schemes, cfg)
	return schemes
}

// SchemeNames returns the keys of schemes, for ticket.ParseOptions.
func SchemeNames(schemes map[string]Scheme) []string {
	names := make([]string, 0, len(schemes))
	for n := range schemes {
		names = append(names, n)
	}
	return names
}
