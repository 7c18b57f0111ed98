package daemon

import (
	"errors"
	"strconv"
	"testing"
)

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-99", "bytes=5-", "bytes=-5", "bytes=-", "bytes=0-1,2-3", "bytes=9-1",
		"bytes=99999999999999999999-", "items=0-1", " bytes=0-1", "bytes=0-9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		br, err := parseRange(h)
		if err != nil {
			var he *httpError
			if !errors.As(err, &he) || he.Code != 416 {
				t.Fatalf("error %v is not a 416", err)
			}
			return
		}
		if br.Suffix {
			return
		}
		if br.First < 0 || (br.Last >= 0 && br.Last < br.First) {
			t.Fatalf("parseRange(%q) = %+v", h, br)
		}
		// A valid range formats back to itself.
		s := "bytes=" + strconv.FormatInt(br.First, 10) + "-"
		if br.Last >= 0 {
			s += strconv.FormatInt(br.Last, 10)
		}
		again, err := parseRange(s)
		if err != nil || again != br {
			t.Fatalf("round trip of %q: %+v, %v", s, again, err)
		}
	})
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-99/100", "bytes 0-99/*", "bytes 5-*/*", "bytes 9-1/*", "bytes 0-100/100",
		"bytes */100", "bytes 0-1/2 ", "bytes 99999999999999999999-1/*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		cr, err := parseContentRange(h)
		if err != nil {
			var he *httpError
			if !errors.As(err, &he) || he.Code != 400 {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		if cr.First < 0 || (cr.Last >= 0 && cr.Last < cr.First) || (cr.Complete >= 0 && cr.Last >= cr.Complete) {
			t.Fatalf("parseContentRange(%q) = %+v", h, cr)
		}
	})
}

func FuzzPatchJSON(f *testing.F) {
	for _, s := range []string{`{"op": "zero", "size": 1, "offset": 0, "flush": true}`, `{"op": "flush"}`,
		`{"op": "zero", "size": -1}`, `{"op": "zero", "size": 1.5}`, `{"op": "trim"}`, `[]`, `{"op": "zero", "size": 99999999999999999999}`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := parsePatch(data)
		if err != nil {
			var he *httpError
			if !errors.As(err, &he) || he.Code != 400 {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		op, err := enumValue(msg, "op", []string{"flush", "zero"}, "")
		if err != nil {
			return
		}
		if op != "zero" {
			return
		}
		z, err := parseZero(msg)
		if err != nil {
			var he *httpError
			if !errors.As(err, &he) || (he.Code != 400 && he.Code != 416) {
				t.Fatalf("error %v is not a 400 or 416", err)
			}
			return
		}
		if z.Offset < 0 || z.Size < 0 || z.Offset+z.Size < 0 {
			t.Fatalf("parseZero accepted %+v", z)
		}
	})
}
