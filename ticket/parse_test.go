package ticket

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

const validTicket = `{"uuid": "0123456789abcdef-0123", "size": 1048576, "url": "nbd:unix:/run/sock",
	"ops": ["read"], "timeout": 300}`

func TestParseValid(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want *Ticket
	}{
		{
			name: "minimal",
			doc:  validTicket,
			want: &Ticket{UUID: "0123456789abcdef-0123", Size: 1 << 20, URL: "nbd:unix:/run/sock",
				Ops: []string{"read"}, Timeout: 300, InactivityTimeout: 60,
				TransferID: "(ticket/01234567...)"},
		},
		{
			name: "all fields",
			doc: `{"uuid": "u-1234567890", "size": 0, "url": "file:///var/tmp/disk.raw", "ops": ["read", "write"],
				"timeout": 0, "inactivity_timeout": 3600, "sparse": true, "dirty": true,
				"transfer_id": "t-1", "filename": "disk.raw"}`,
			want: &Ticket{UUID: "u-1234567890", Size: 0, URL: "file:///var/tmp/disk.raw",
				Ops: []string{"read", "write"}, Timeout: 0, InactivityTimeout: 3600, Sparse: true,
				Dirty: true, TransferID: "t-1", Filename: "disk.raw"},
		},
		{
			name: "legacy name",
			doc:  `{"name": "legacy-ticket", "size": 1, "url": "HTTPS://host:54322/images/x", "ops": ["write"], "timeout": 1}`,
			want: &Ticket{UUID: "legacy-ticket", Size: 1, URL: "HTTPS://host:54322/images/x",
				Ops: []string{"write"}, Timeout: 1, InactivityTimeout: 60, TransferID: "(ticket/legacy-t...)"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.doc), ParseOptions{InactivityTimeout: 60})
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreUnexported(Ticket{})); diff != "" {
				t.Errorf("ticket mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	// with replaces or adds key in the valid ticket (nil deletes it).
	with := func(key string, value any) string {
		var d map[string]any
		if err := json.Unmarshal([]byte(validTicket), &d); err != nil {
			panic(err)
		}
		if value == nil {
			delete(d, key)
		} else {
			d[key] = value
		}
		b, _ := json.Marshal(d)
		return string(b)
	}
	tests := []struct {
		name, doc, want string
		json            bool
	}{
		{"not json", `{"uuid": `, "", true},
		{"trailing data", validTicket + " {}", "", true},
		{"not a dict", `[1]`, "Invalid ticket: [1], expecting a dict", false},
		{"missing uuid and name", with("uuid", nil), "Required ticket parameter is missing: name", false},
		{"missing size", with("size", nil), "Required ticket parameter is missing: size", false},
		{"missing ops", with("ops", nil), "Required ticket parameter is missing: ops", false},
		{"missing timeout", with("timeout", nil), "Required ticket parameter is missing: timeout", false},
		{"missing url", with("url", nil), "Required ticket parameter is missing: url", false},
		{"size string", with("size", "1"), "Invalid value for 'size': '1': expecting a <class 'int'> value", false},
		{"size float", with("size", 1.5), "Invalid value for 'size': 1.5: expecting a <class 'int'> value", false},
		{"size bool", with("size", true), "Invalid value for 'size': True: expecting a <class 'int'> value", false},
		{"size negative", with("size", -1), "Invalid value for 'size': -1: expecting a value >= 0", false},
		{"size huge", `{"uuid":"x","size":99999999999999999999,"url":"nbd:x","ops":["read"],"timeout":1}`,
			"Invalid value for 'size': 99999999999999999999: value too large", false},
		{"timeout negative", with("timeout", -5), "Invalid value for 'timeout': -5: expecting a value >= 0", false},
		{"inactivity null", with("inactivity_timeout", json.RawMessage("null")),
			"Invalid value for 'inactivity_timeout': None: expecting a <class 'int'> value", false},
		{"uuid int", with("uuid", 7), "Invalid value for 'uuid': 7: expecting a <class 'str'> value", false},
		{"uuid empty", with("uuid", ""), "Invalid value for 'uuid': '': expecting a non-empty string", false},
		{"ops not list", with("ops", "read"), "Invalid value for 'ops': 'read': expecting a <class 'list'> value", false},
		{"ops empty", with("ops", []string{}), "Invalid value for 'ops': []: expecting 'read' and/or 'write'", false},
		{"ops unknown", with("ops", []string{"read", "trim"}),
			"Invalid value for 'ops': ['read', 'trim']: unknown operation 'trim', expecting 'read' and/or 'write'", false},
		{"ops repeated", with("ops", []string{"read", "read"}),
			"Invalid value for 'ops': ['read', 'read']: operation 'read' is repeated", false},
		{"url scheme", with("url", "ftp://host/x"), "Invalid value for 'url': 'ftp://host/x': Unsupported url scheme: ftp", false},
		{"url no scheme", with("url", "/var/tmp/x"), "Invalid value for 'url': '/var/tmp/x': Unsupported url scheme: ", false},
		{"sparse string", with("sparse", "yes"), "Invalid value for 'sparse': 'yes': expecting a <class 'bool'> value", false},
		{"dirty int", with("dirty", 1), "Invalid value for 'dirty': 1: expecting a <class 'bool'> value", false},
		{"transfer id int", with("transfer_id", 1), "Invalid value for 'transfer_id': 1: expecting a <class 'str'> value", false},
		{"filename list", with("filename", []string{"a"}), "Invalid value for 'filename': ['a']: expecting a <class 'str'> value", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc), ParseOptions{InactivityTimeout: 60})
			var ie *InvalidError
			if !errors.As(err, &ie) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse error = %v, want *InvalidError", err)
			}
			if ie.JSON != tc.json {
				t.Errorf("JSON = %v, want %v (%s)", ie.JSON, tc.json, ie.Message)
			}
			if tc.want != "" && ie.Message != tc.want {
				t.Errorf("message:\n got %s\nwant %s", ie.Message, tc.want)
			}
		})
	}
}

func TestParseSchemes(t *testing.T) {
	doc := strings.Replace(validTicket, "nbd:unix:/run/sock", "mem:test", 1)
	if _, err := Parse([]byte(doc), ParseOptions{}); err == nil {
		t.Fatal("mem: accepted with default schemes")
	}
	if _, err := Parse([]byte(doc), ParseOptions{Schemes: []string{"mem"}}); err != nil {
		t.Fatalf("mem: rejected with Schemes=[mem]: %v", err)
	}
}

func TestRepr(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{`"it's"`, `"it's"`},
		{`"a\\b"`, `'a\\b'`},
		{`"tab\tnl\n"`, `'tab\tnl\n'`},
		{`1e3`, `1000.0`},
		{`2.5`, `2.5`},
		{`null`, `None`},
		{`[true, false, {"b": 1, "a": "x"}]`, `[True, False, {'a': 'x', 'b': 1}]`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			dec := json.NewDecoder(strings.NewReader(tc.in))
			dec.UseNumber()
			var v any
			if err := dec.Decode(&v); err != nil {
				t.Fatal(err)
			}
			if got := Repr(v); got != tc.want {
				t.Errorf("Repr(%s) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

func FuzzParseTicket(f *testing.F) {
	f.Add([]byte(validTicket))
	f.Add([]byte(`{"uuid": "x", "size": 1, "url": "file:///x", "ops": ["read", "write"], "timeout": 1, "sparse": true, "dirty": false, "filename": "a", "transfer_id": "t"}`))
	f.Add([]byte(`{"name": "x", "size": 1.0, "url": "", "ops": [], "timeout": -1}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"uuid": "x", "size": 1, "url": "nbd:x", "ops": ["read"], "timeout": 1, "transfer_id": ""}`))
	f.Add([]byte(`{"uuid": "\u0000", "size": 9223372036854775807}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tk, err := Parse(data, ParseOptions{InactivityTimeout: 60})
		if err != nil {
			var ie *InvalidError
			if !errors.As(err, &ie) {
				t.Fatalf("error is not *InvalidError: %v", err)
			}
			return
		}
		if tk.UUID == "" || tk.Size < 0 || tk.Timeout < 0 || tk.InactivityTimeout < 0 || len(tk.Ops) == 0 {
			t.Fatalf("accepted invalid ticket %+v", tk)
		}
		for _, op := range tk.Ops {
			if op != OpRead && op != OpWrite {
				t.Fatalf("accepted op %q", op)
			}
		}
		// A valid ticket survives a round trip through its status (JSON
		// output replaces invalid UTF-8, and an empty transfer_id is left
		// out of the status, as the reference does).
		if !utf8.Valid(data) || tk.TransferID == "" {
			return
		}
		s := NewStore(Config{Clock: func() int64 { return 0 }})
		s.Add(tk)
		b, err := json.Marshal(tk.Status())
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(b, ParseOptions{InactivityTimeout: 60})
		if err != nil {
			t.Fatalf("status does not parse back: %v\n%s", err, b)
		}
		if diff := cmp.Diff(tk, again, cmpopts.IgnoreUnexported(Ticket{})); diff != "" {
			t.Fatalf("round trip mismatch (-first +second):\n%s", diff)
		}
	})
}
