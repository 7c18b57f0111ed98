package ticket

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

// Operations a ticket may allow.
const (
	OpRead  = "read"
	OpWrite = "write"
)

// ErrInvalid is wrapped by every error Parse returns for a ticket that is
// not valid JSON or does not follow the schema.
var ErrInvalid = errors.New("invalid ticket")

// InvalidError describes why a ticket was rejected. Message is the text of
// the reference daemon, safe to send to the client (it never holds the
// uuid; the ticket document comes from the client anyway).
type InvalidError struct {
	// JSON is true when the document is not JSON at all.
	JSON    bool
	Message string
}

func (e *InvalidError) Error() string { return e.Message }

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Unwrap() error { return ErrInvalid }

// ParseOptions are the daemon settings that parsing depends on.
type ParseOptions struct {
	// InactivityTimeout is the default inactivity_timeout in seconds
	// ([daemon] inactivity_timeout).
	InactivityTimeout int
	// Schemes lists the URL schemes that have a backend. Empty accepts
	// file, nbd, http and https.
	Schemes []string
}

// DefaultSchemes are the URL schemes with a backend in imageiod.
var DefaultSchemes = []string{"file", "http", "https", "nbd"}

// Parse validates a ticket JSON document. Types are checked exactly (an
// integer field does not take "1", 1.0 or true); it is stricter than the
// reference daemon in rejecting negative sizes and timeouts, unknown or
// repeated operations, an empty uuid, an empty ops list and sizes that do
// not fit in 63 bits.
func Parse(data []byte, opts ParseOptions) (*Ticket, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, &InvalidError{JSON: true, Message: jsonMessage(err)}
	}
	if dec.More() {
		return nil, &InvalidError{JSON: true, Message: "Extra data after the JSON document"}
	}
	if _, err := dec.Token(); err == nil {
		return nil, &InvalidError{JSON: true, Message: "Extra data after the JSON document"}
	}
	d, ok := doc.(map[string]any)
	if !ok {
		return nil, invalidf("Invalid ticket: %s, expecting a dict", Repr(doc))
	}
	t := &Ticket{}
	var err error
	if _, ok := d["uuid"]; ok {
		t.UUID, err = requiredString(d, "uuid")
	} else {
		// Old engines sent "name"; the reference still accepts it.
		t.UUID, err = requiredString(d, "name")
	}
	if err != nil {
		return nil, err
	}
	if t.UUID == "" {
		return nil, invalidValue("uuid", "", "expecting a non-empty string")
	}
	if t.Size, err = requiredInt(d, "size"); err != nil {
		return nil, err
	}
	if t.Ops, err = parseOps(d); err != nil {
		return nil, err
	}
	if t.Timeout, err = requiredInt(d, "timeout"); err != nil {
		return nil, err
	}
	t.InactivityTimeout = int64(opts.InactivityTimeout)
	if _, ok := d["inactivity_timeout"]; ok {
		if t.InactivityTimeout, err = requiredInt(d, "inactivity_timeout"); err != nil {
			return nil, err
		}
	}
	if t.URL, err = requiredString(d, "url"); err != nil {
		return nil, err
	}
	schemes := opts.Schemes
	if len(schemes) == 0 {
		schemes = DefaultSchemes
	}
	scheme := Scheme(t.URL)
	if !contains(schemes, scheme) {
		return nil, invalidValue("url", t.URL, "Unsupported url scheme: "+scheme)
	}
	if _, ok := d["transfer_id"]; ok {
		if t.TransferID, err = requiredString(d, "transfer_id"); err != nil {
			return nil, err
		}
	} else {
		// Engines before 4.2.7 sent no transfer id. The reference makes
		// one from the first 18 characters of the uuid; transfer ids are
		// logged, so take only the redacted form of the secret.
		t.TransferID = "(ticket/" + Redact(t.UUID) + ")"
	}
	if _, ok := d["filename"]; ok {
		if t.Filename, err = requiredString(d, "filename"); err != nil {
			return nil, err
		}
	}
	if t.Sparse, err = optionalBool(d, "sparse"); err != nil {
		return nil, err
	}
	if t.Dirty, err = optionalBool(d, "dirty"); err != nil {
		return nil, err
	}
	return t, nil
}

// Scheme returns the lowercased scheme of a URL ("nbd" for
// "nbd:unix:/sock"), or "" when it has none.
func Scheme(url string) string {
	i := strings.IndexByte(url, ':')
	if i <= 0 {
		return ""
	}
	s := url[:i]
	for j, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case j > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return ""
		}
	}
	return strings.ToLower(s)
}

func parseOps(d map[string]any) ([]string, error) {
	v, ok := d["ops"]
	if !ok {
		return nil, missing("ops")
	}
	list, ok := v.([]any)
	if !ok {
		return nil, invalidType("ops", v, "list")
	}
	if len(list) == 0 {
		return nil, invalidValue("ops", v, "expecting 'read' and/or 'write'")
	}
	ops := make([]string, 0, len(list))
	for _, e := range list {
		s, ok := e.(string)
		if !ok || (s != OpRead && s != OpWrite) {
			return nil, invalidValue("ops", v, fmt.Sprintf("unknown operation %s, expecting 'read' and/or 'write'", Repr(e)))
		}
		if contains(ops, s) {
			return nil, invalidValue("ops", v, fmt.Sprintf("operation %s is repeated", Repr(e)))
		}
		ops = append(ops, s)
	}
	return ops, nil
}

func requiredString(d map[string]any, key string) (string, error) {
	v, ok := d[key]
	if !ok {
		return "", missing(key)
	}
	s, ok := v.(string)
	if !ok {
		return "", invalidType(key, v, "str")
	}
	return s, nil
}

func requiredInt(d map[string]any, key string) (int64, error) {
	v, ok := d[key]
	if !ok {
		return 0, missing(key)
	}
	n, ok := v.(json.Number)
	if !ok || strings.ContainsAny(string(n), ".eE") {
		return 0, invalidType(key, v, "int")
	}
	i, err := n.Int64()
	if err != nil || i > math.MaxInt64/2 {
		return 0, invalidValue(key, v, "value too large")
	}
	if i < 0 {
		return 0, invalidValue(key, v, "expecting a value >= 0")
	}
	return i, nil
}

func optionalBool(d map[string]any, key string) (bool, error) {
	v, ok := d[key]
	if !ok {
		return false, nil
	}
	b, ok := v.(bool)
	if !ok {
		return false, invalidType(key, v, "bool")
	}
	return b, nil
}

func missing(key string) error {
	return invalidf("Required ticket parameter is missing: %s", key)
}

func invalidType(key string, v any, typ string) error {
	return invalidValue(key, v, fmt.Sprintf("expecting a <class '%s'> value", typ))
}

func invalidValue(key string, v any, reason string) error {
	return invalidf("Invalid value for %s: %s: %s", reprString(key), Repr(v), reason)
}

func invalidf(format string, args ...any) error {
	return &InvalidError{Message: fmt.Sprintf(format, args...)}
}

// jsonMessage turns a decoding error into a short message without Go type
// names.
func jsonMessage(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s (char %d)", se.Error(), se.Offset)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "Unexpected end of JSON input"
	}
	return err.Error()
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}
