package nbd

import (
	"context"
	"fmt"
)

// maxStatusLength bounds one NBD_CMD_BLOCK_STATUS request: 2 GiB less
// one alignment unit.
const maxStatusLength = 1<<31 - 64<<10

// statusKind says how a meta context contributes to an Extent.
type statusKind int

const (
	kindBase   statusKind = iota // base:allocation: zero (and hole without depth)
	kindDepth                    // qemu:allocation-depth: hole when 0
	kindBitmap                   // qemu:dirty-bitmap:NAME: dirty
)

type statusContext struct {
	id   uint32
	name string
	kind statusKind
}

// statusContexts lists the negotiated contexts Extents merges.
func (c *Client) statusContexts() []statusContext {
	var out []statusContext
	add := func(name string, kind statusKind) {
		if id, ok := c.info.contexts[name]; ok {
			out = append(out, statusContext{id: id, name: name, kind: kind})
		}
	}
	add(ContextBaseAllocation, kindBase)
	add(ContextAllocationDepth, kindDepth)
	if c.info.bitmap != "" {
		add(c.info.bitmap, kindBitmap)
	}
	return out
}

// Extents describes [off, off+length) as runs, merging base:allocation
// with qemu:allocation-depth (depth 0 is a hole) or with the dirty bitmap.
// The runs cover the range exactly, in order, and neighbours with the same
// flags are merged. Without any block status context the whole range is
// one data extent.
func (c *Client) Extents(ctx context.Context, off, length int64) ([]Extent, error) {
	if err := c.checkRange("getting extents of", off, length); err != nil {
		return nil, err
	}
	if length == 0 {
		return nil, nil
	}
	contexts := c.statusContexts()
	if len(contexts) == 0 {
		return []Extent{{Start: off, Length: length}}, nil
	}
	step := c.step(maxStatusLength)
	var out []Extent
	end := off + length
	for pos := off; pos < end; {
		n := min(step, end-pos)
		req, err := c.start(ctx, cmdBlockStatus, 0, pos, n, nil)
		if err == nil {
			err = c.wait(ctx, req)
		}
		if err != nil {
			return nil, fmt.Errorf("getting extents at offset %d: %w", pos, err)
		}
		exts, err := mergeStatus(pos, n, contexts, req.status)
		if err != nil {
			return nil, fmt.Errorf("getting extents at offset %d: %w", pos, err)
		}
		for _, e := range exts {
			out = appendExtent(out, e)
		}
		pos = exts[len(exts)-1].End()
	}
	return out, nil
}

// mergeStatus merges the descriptors of each context, which all start at
// off, into extents. It covers as much of [off, off+length) as every
// context describes, at least one byte.
func mergeStatus(off, length int64, contexts []statusContext, status map[uint32][]desc) ([]Extent, error) {
	lists := make([][]desc, len(contexts))
	hasDepth, hasBitmap := false, false
	for i, sc := range contexts {
		d := status[sc.id]
		if len(d) == 0 {
			return nil, fmt.Errorf("%w: no block status for %s", ErrProtocol, sc.name)
		}
		lists[i] = d
		hasDepth = hasDepth || sc.kind == kindDepth
		hasBitmap = hasBitmap || sc.kind == kindBitmap
	}
	// ends[i] is where the current descriptor of context i ends.
	idx := make([]int, len(contexts))
	ends := make([]int64, len(contexts))
	for i := range lists {
		ends[i] = off + int64(lists[i][0].length)
	}
	var out []Extent
	pos, end := off, off+length
	for pos < end {
		next := end
		for _, e := range ends {
			next = min(next, e)
		}
		var e Extent
		for i, sc := range contexts {
			f := lists[i][idx[i]].flags
			switch sc.kind {
			case kindBase:
				e.Zero = f&stateZero != 0
				if !hasDepth && !hasBitmap {
					e.Hole = f&stateHole != 0
				}
			case kindDepth:
				e.Hole = f == 0
			case kindBitmap:
				e.Dirty = f&stateDirty != 0
			}
		}
		if e.Hole {
			e.Zero = true
		}
		e.Start, e.Length = pos, next-pos
		out = appendExtent(out, e)
		pos = next
		// Advance every context whose descriptor ends here; stop when one
		// runs out.
		for i := range lists {
			if ends[i] != next {
				continue
			}
			idx[i]++
			if idx[i] == len(lists[i]) {
				return out, nil
			}
			ends[i] += int64(lists[i][idx[i]].length)
		}
	}
	return out, nil
}

// appendExtent appends e to exts, merging it into the last extent when
// they touch and have the same flags.
func appendExtent(exts []Extent, e Extent) []Extent {
	if n := len(exts); n > 0 {
		last := &exts[n-1]
		if last.End() == e.Start && last.Zero == e.Zero && last.Hole == e.Hole && last.Dirty == e.Dirty {
			last.Length += e.Length
			return exts
		}
	}
	return append(exts, e)
}
