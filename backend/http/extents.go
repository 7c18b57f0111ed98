package http

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/imageio/imageio/backend"
)

// wireExtent is one element of the daemon's extents array. Zero context
// has start, length, zero, hole; dirty context has start, length, dirty,
// zero.
type wireExtent struct {
	Start  *int64 `json:"start"`
	Length *int64 `json:"length"`
	Zero   bool   `json:"zero"`
	Hole   bool   `json:"hole"`
	Dirty  bool   `json:"dirty"`
}

// errBadExtents is wrapped by parse errors of the extents array.
var errBadExtents = errors.New("invalid extents")

// parseExtents reads the JSON array of extents sent by GET
// /images/ID/extents. It decodes one element at a time, so a fragmented
// image costs only the returned slice. The extents must start at 0, be
// contiguous and have positive lengths; neighbours with equal flags are
// merged.
func parseExtents(r io.Reader) ([]backend.Extent, error) {
	dec := json.NewDecoder(r)
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadExtents, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, fmt.Errorf("%w: expected an array", errBadExtents)
	}
	var out []backend.Extent
	var end int64
	for dec.More() {
		var w wireExtent
		if err := dec.Decode(&w); err != nil {
			return nil, fmt.Errorf("%w: extent %d: %v", errBadExtents, len(out), err)
		}
		if w.Start == nil || w.Length == nil {
			return nil, fmt.Errorf("%w: extent %d: missing start or length", errBadExtents, len(out))
		}
		start, length := *w.Start, *w.Length
		if start != end {
			return nil, fmt.Errorf("%w: extent %d starts at %d, expected %d", errBadExtents, len(out), start, end)
		}
		if length <= 0 || start > (1<<63-1)-length {
			return nil, fmt.Errorf("%w: extent %d has invalid length %d", errBadExtents, len(out), length)
		}
		end = start + length
		e := backend.Extent{Start: start, Length: length, Zero: w.Zero, Hole: w.Hole, Dirty: w.Dirty}
		if n := len(out); n > 0 {
			last := &out[n-1]
			if last.Zero == e.Zero && last.Hole == e.Hole && last.Dirty == e.Dirty {
				last.Length += e.Length
				continue
			}
		}
		out = append(out, e)
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadExtents, err)
	}
	return out, nil
}
