package daemon

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/imageio/imageio/checksum"
	"github.com/imageio/imageio/ticket"
)

// upstreamChecksummer is a backend that can ask another daemon for the
// checksum (the proxy backend), instead of reading the whole image.
type upstreamChecksummer interface {
	Checksum(ctx context.Context, algorithm string, blockSize int) (string, error)
}

func (s *Service) checksum(w http.ResponseWriter, r *request, id string) error {
	if id == "" {
		return errorf(http.StatusBadRequest, "Ticket id is required")
	}
	algorithm, err := enumParam(r, "algorithm", checksum.Algorithms(), checksum.DefaultAlgorithm)
	if err != nil {
		return err
	}
	blockSize := checksum.DefaultBlockSize
	if v, ok := r.q("block_size"); ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return errorf(http.StatusBadRequest, "Invalid block size: %s", ticket.Repr(v))
		}
		blockSize = n
	}
	if err := checksum.Validate(algorithm, blockSize); err != nil {
		return &httpError{Code: http.StatusBadRequest, Msg: err.Error()}
	}
	t, b, err := s.authorize(r, ticket.OpRead)
	if err != nil {
		// Unlike images and extents, the reference keeps the
		// connection after a checksum 403.
		return err
	}
	s.log.Info("CHECKSUM", "connection", r.conn.id, "transfer", t.TransferID, "algorithm", algorithm, "block_size", blockSize)
	op, ctx, err := t.Begin(r.conn.ctx, 0)
	if err != nil {
		return closeOnAuthError(err)
	}
	start := time.Now()
	var res checksum.Result
	var cerr error
	if up, ok := b.Backend.(upstreamChecksummer); ok {
		res = checksum.Result{Algorithm: algorithm, BlockSize: blockSize}
		res.Checksum, cerr = up.Checksum(ctx, algorithm, blockSize)
	} else {
		res, cerr = checksum.Compute(ctx, b, algorithm, blockSize)
	}
	if cerr == nil {
		op.Add(b.Size())
	}
	if err := endOp(r, op, "checksum", start); err != nil {
		return closeOnAuthError(err)
	}
	if cerr != nil {
		return cerr
	}
	body, err := pyJSON(res)
	if err != nil {
		return err
	}
	return writeJSON(w, body)
}

func (s *Service) algorithms(w http.ResponseWriter, r *request, _ string) error {
	body, err := pyJSON(map[string][]string{"algorithms": checksum.Algorithms()})
	if err != nil {
		return err
	}
	return writeJSON(w, body)
}
