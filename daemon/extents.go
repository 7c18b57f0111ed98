package daemon

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/imageio/imageio/backend"
	"github.com/imageio/imageio/ticket"
)

func (s *Service) extents(w http.ResponseWriter, r *request, id string) error {
	if id == "" {
		return errorf(http.StatusBadRequest, "Ticket id is required")
	}
	t, b, err := s.authorize(r, ticket.OpRead)
	if err != nil {
		return closeOnAuthError(err)
	}
	context, err := enumParam(r, "context", []string{backend.ContextDirty, backend.ContextZero}, backend.ContextZero)
	if err != nil {
		return err
	}
	if context == backend.ContextDirty && !t.Dirty {
		return errorf(http.StatusNotFound, "Ticket does not support dirty extents")
	}
	if !b.Caps().HasExtents(context) {
		return errorf(http.StatusNotFound, "Operation not supported: backend does not support %s extents", context)
	}
	s.log.Info("EXTENTS", "connection", r.conn.id, "transfer", t.TransferID, "context", context)
	op, ctx, err := t.Begin(r.conn.ctx, 0)
	if err != nil {
		return closeOnAuthError(err)
	}
	start := time.Now()
	ext, xerr := b.Extents(ctx, context)
	if err := endOp(r, op, "extents", start); err != nil {
		return closeOnAuthError(err)
	}
	if xerr != nil {
		if errors.Is(xerr, backend.ErrNotSupported) {
			return &httpError{Code: http.StatusNotFound, Msg: "Operation not supported: " + firstLine(xerr), Err: xerr}
		}
		return xerr
	}
	return writeJSON(w, encodeExtents(ext, context))
}

// encodeExtents writes the extents as the reference does: zero context
// {"start", "length", "zero", "hole"}, dirty context {"start", "length",
// "dirty", "zero"}, with Python's separators.
func encodeExtents(ext []backend.Extent, context string) []byte {
	buf := make([]byte, 0, 2+len(ext)*72)
	buf = append(buf, '[')
	for i, e := range ext {
		if i > 0 {
			buf = append(buf, ", "...)
		}
		buf = append(buf, `{"start": `...)
		buf = strconv.AppendInt(buf, e.Start, 10)
		buf = append(buf, `, "length": `...)
		buf = strconv.AppendInt(buf, e.Length, 10)
		if context == backend.ContextDirty {
			buf = append(buf, `, "dirty": `...)
			buf = strconv.AppendBool(buf, e.Dirty)
			buf = append(buf, `, "zero": `...)
			buf = strconv.AppendBool(buf, e.Zero)
		} else {
			buf = append(buf, `, "zero": `...)
			buf = strconv.AppendBool(buf, e.Zero)
			buf = append(buf, `, "hole": `...)
			buf = strconv.AppendBool(buf, e.Hole)
		}
		buf = append(buf, '}')
	}
	return append(buf, ']')
}
