package mem_test

import (
	"testing"

	"github.com/imageio/imageio/backend"
	"github.com/imageio/imageio/backend/backendtest"
	"github.com/imageio/imageio/backend/mem"
)

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backend.Backend {
		return mem.New(size)
	})
}

func TestConformanceDirty(t *testing.T) {
	caps := mem.DefaultCaps()
	caps.Extents = append(caps.Extents, backend.ContextDirty)
	caps.CanFlush = false
	caps.MaxWriters = 1
	backendtest.Run(t, func(t *testing.T, size int64) backend.Backend {
		return mem.NewWithCaps(size, caps)
	})
}

func TestConformanceReadOnly(t *testing.T) {
	caps := mem.DefaultCaps()
	caps.ReadOnly = true
	backendtest.Run(t, func(t *testing.T, size int64) backend.Backend {
		return mem.NewWithCaps(size, caps)
	})
}
