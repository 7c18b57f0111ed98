package http

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/imageio/imageio/backend"
)

func TestParseExtents(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []backend.Extent
		wantErr bool
	}{
		{name: "empty", in: `[]`},
		{
			name: "reference daemon",
			in: `[{"start": 0, "length": 1048576, "zero": false, "hole": false},
			      {"start": 1048576, "length": 2097152, "zero": true, "hole": true}]` + "\n",
			want: []backend.Extent{{Start: 0, Length: 1 << 20}, {Start: 1 << 20, Length: 2 << 20, Zero: true, Hole: true}},
		},
		{
			name: "dirty",
			in:   `[{"start":0,"length":4096,"dirty":true,"zero":false},{"start":4096,"length":4096,"dirty":false,"zero":true}]`,
			want: []backend.Extent{{Start: 0, Length: 4096, Dirty: true}, {Start: 4096, Length: 4096, Zero: true}},
		},
		{
			name: "merged",
			in:   `[{"start":0,"length":10,"zero":true},{"start":10,"length":5,"zero":true},{"start":15,"length":1}]`,
			want: []backend.Extent{{Start: 0, Length: 15, Zero: true}, {Start: 15, Length: 1}},
		},
		{name: "not an array", in: `{"start":0}`, wantErr: true},
		{name: "gap", in: `[{"start":0,"length":10},{"start":11,"length":5}]`, wantErr: true},
		{name: "not at 0", in: `[{"start":5,"length":10}]`, wantErr: true},
		{name: "zero length", in: `[{"start":0,"length":0}]`, wantErr: true},
		{name: "negative", in: `[{"start":0,"length":-4}]`, wantErr: true},
		{name: "overflow", in: `[{"start":0,"length":9223372036854775807},{"start":9223372036854775807,"length":1}]`, wantErr: true},
		{name: "missing length", in: `[{"start":0}]`, wantErr: true},
		{name: "truncated", in: `[{"start":0,"length":10},`, wantErr: true},
		{name: "bad type", in: `[{"start":"0","length":10}]`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseExtents(strings.NewReader(tc.in))
			if tc.wantErr {
				if !errors.Is(err, errBadExtents) {
					t.Errorf("got %v, %v; want an invalid extents error", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("extents (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseExtents(f *testing.F) {
	f.Add(`[{"start": 0, "length": 1048576, "zero": false, "hole": false}, {"start": 1048576, "length": 1048576, "zero": true, "hole": true}]`)
	f.Add(`[{"start":0,"length":4096,"dirty":true,"zero":false}]`)
	f.Add(`[]`)
	f.Add(`[{"start":0,"length":9223372036854775807}]`)
	f.Add(`[{"start":0,"length":10},{"start":10,"length":10,"zero":true}`)
	f.Fuzz(func(t *testing.T, in string) {
		ext, err := parseExtents(strings.NewReader(in))
		if err != nil {
			return
		}
		var end int64
		for i, e := range ext {
			if e.Start != end || e.Length <= 0 {
				t.Fatalf("extent %d %+v: want start %d and a positive length", i, e, end)
			}
			if i > 0 {
				p := ext[i-1]
				if p.Zero == e.Zero && p.Hole == e.Hole && p.Dirty == e.Dirty {
					t.Fatalf("extents %d and %d not merged", i-1, i)
				}
			}
			end = e.End()
		}
	})
}
