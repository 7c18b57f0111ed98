package daemon

import (
	"net/http"
	"regexp"
	"strconv"

	"github.com/imageio/imageio/ticket"
)

var (
	rangeRe        = regexp.MustCompile(`^bytes=(\d*)-(\d*)$`)
	contentRangeRe = regexp.MustCompile(`^bytes (\d+)-(\d+|\*)/(\d+|\*)$`)
)

// byteRange is a parsed Range header: bytes=First-Last, with Last -1 for
// an open range (bytes=First-). Suffix is set for bytes=-N (not supported).
type byteRange struct {
	First, Last int64
	Suffix      bool
}

// parseRange parses a Range header value the way the reference does: one
// range only, no spaces, unit "bytes"; errors are 416.
func parseRange(h string) (byteRange, error) {
	m := rangeRe.FindStringSubmatch(h)
	if m == nil {
		return byteRange{}, errorf(http.StatusRequestedRangeNotSatisfiable,
			"Cannot satisfy range %s, invalid range or multiple ranges", ticket.Repr(h))
	}
	first, last := m[1], m[2]
	if first == "" {
		if last == "" {
			return byteRange{}, errorf(http.StatusRequestedRangeNotSatisfiable,
				"Cannot satisfy range %s, no first or last", ticket.Repr(h))
		}
		return byteRange{Suffix: true, Last: -1}, nil
	}
	f, err := strconv.ParseInt(first, 10, 64)
	if err != nil {
		return byteRange{}, errorf(http.StatusRequestedRangeNotSatisfiable,
			"Cannot satisfy range %s, invalid range or multiple ranges", ticket.Repr(h))
	}
	if last == "" {
		return byteRange{First: f, Last: -1}, nil
	}
	l, err := strconv.ParseInt(last, 10, 64)
	if err != nil || l == 1<<63-1 {
		return byteRange{}, errorf(http.StatusRequestedRangeNotSatisfiable,
			"Cannot satisfy range %s, invalid range or multiple ranges", ticket.Repr(h))
	}
	if f > l {
		return byteRange{}, errorf(http.StatusRequestedRangeNotSatisfiable,
			"Cannot satisfy range %s, first > last", ticket.Repr(h))
	}
	return byteRange{First: f, Last: l}, nil
}

// contentRange is a parsed Content-Range header: bytes First-Last/Complete
// with -1 for "*".
type contentRange struct {
	First, Last, Complete int64
}

// parseContentRange parses a Content-Range header of a PUT; errors are 400.
func parseContentRange(h string) (contentRange, error) {
	m := contentRangeRe.FindStringSubmatch(h)
	if m == nil {
		return contentRange{}, errorf(http.StatusBadRequest, "Invalid Content-Range %s", ticket.Repr(h))
	}
	cr := contentRange{Last: -1, Complete: -1}
	var err error
	if cr.First, err = strconv.ParseInt(m[1], 10, 64); err != nil {
		return contentRange{}, errorf(http.StatusBadRequest, "Invalid Content-Range %s", ticket.Repr(h))
	}
	if m[2] != "*" {
		if cr.Last, err = strconv.ParseInt(m[2], 10, 64); err != nil {
			return contentRange{}, errorf(http.StatusBadRequest, "Invalid Content-Range %s", ticket.Repr(h))
		}
		if cr.Last < cr.First {
			return contentRange{}, errorf(http.StatusBadRequest, "Invalid Content-Range %s, first > last", ticket.Repr(h))
		}
	}
	if m[3] != "*" {
		if cr.Complete, err = strconv.ParseInt(m[3], 10, 64); err != nil {
			return contentRange{}, errorf(http.StatusBadRequest, "Invalid Content-Range %s", ticket.Repr(h))
		}
		if cr.Last >= 0 && cr.Last >= cr.Complete {
			return contentRange{}, errorf(http.StatusBadRequest, "Invalid Content-Range %s, last >= complete", ticket.Repr(h))
		}
	}
	return cr, nil
}
