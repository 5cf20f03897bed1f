package ozmap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// maxRawRow bounds Row.Raw.
const maxRawRow = 4 << 10

// Box is the part of an OZmap box the sync needs.
type Box struct {
	ID   string // "id", or "_id" when "id" is absent
	Name string
	// TypeID is boxType as an id string, or the populated object's id/_id;
	// "" when boxType is null or absent.
	TypeID string
	// TypeCode is the populated boxType object's "code" (e.g. "CTO"); "" when
	// boxType is an id string. Resolve ids with Client.BoxTypes.
	TypeCode string
	// Lat and Lng come from coords, which OZmap sends in GeoJSON order
	// [lng, lat]; top-level lat/lng are the fallback.
	Lat, Lng  float64
	HasCoords bool // false when no usable coordinates were present
	// Implanted is true for boxes in service. Boxes asks the server for
	// implanted boxes only, but does not drop rows the server sent anyway:
	// callers must check this field (see shared/reference/ozmap-api.md).
	Implanted bool
	ProjectID string    // "project" as id string, or populated object's id/_id
	UpdatedAt time.Time // zero when absent
}

// Row is one element of a page: either a decoded Box, or Err saying why the
// row could not be decoded (e.g. "field implanted: want boolean, got string").
// Raw is set only with Err, for dead-lettering: the row's JSON when it is at
// most 4 KiB, otherwise a JSON string holding its first 4 KiB, so Raw is
// always valid JSON. A bad row never stops paging.
type Row struct {
	Box Box
	Err error
	Raw json.RawMessage
}

// RowError describes a row that could not be decoded.
type RowError struct {
	Field  string // JSON field at fault; "" when the row itself is wrong
	Reason string
}

func (e *RowError) Error() string {
	if e.Field == "" {
		return "ozmap: row: " + e.Reason
	}
	return "ozmap: row field " + e.Field + ": " + e.Reason
}

func fieldErr(field, format string, args ...any) error {
	return &RowError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// jsonKind names the JSON type of a raw value for error messages.
func jsonKind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

// members is a JSON object whose members are kept raw: object (a decoded
// map, for the cold paths) or fields (the members a scan picked out).
type members interface {
	// member returns the raw member k; ok is false when it is absent.
	member(k string) (v json.RawMessage, ok bool)
}

// object is a decoded JSON object whose members are kept raw.
type object map[string]json.RawMessage

func (o object) member(k string) (json.RawMessage, bool) {
	v, ok := o[k]
	return v, ok
}

// fields is an object scanned for a fixed set of keys (see scanObject).
type fields struct{ fieldSet }

func (f *fields) member(k string) (json.RawMessage, bool) {
	for i, name := range f.keys {
		if name == k {
			return f.vals[i], f.vals[i] != nil
		}
	}
	return nil, false
}

// get returns the member, treating null like absence.
func get(o members, k string) (json.RawMessage, bool) {
	v, ok := o.member(k)
	if !ok || jsonKind(v) == "null" {
		return nil, false
	}
	return v, true
}

func str(o members, k string) (string, bool, error) {
	v, ok := get(o, k)
	if !ok {
		return "", false, nil
	}
	if jsonKind(v) != "string" {
		return "", false, fieldErr(k, "want string, got %s", jsonKind(v))
	}
	s, err := unquote(v)
	if err != nil {
		return "", false, fieldErr(k, "invalid string")
	}
	return s, true, nil
}

// id reads "id", falling back to "_id".
func id(o members, prefix string) (string, error) {
	for _, k := range []string{"id", "_id"} {
		s, ok, err := str(o, k)
		if err != nil {
			var re *RowError
			if errors.As(err, &re) {
				re.Field = prefix + re.Field
			}
			return "", err
		}
		if ok {
			if strings.TrimSpace(s) == "" {
				return "", fieldErr(prefix+k, "empty")
			}
			return s, nil
		}
	}
	return "", fieldErr(prefix+"id", "missing")
}

func (o object) str(k string) (string, bool, error) { return str(o, k) }
func (o object) id(prefix string) (string, error)   { return id(o, prefix) }
func (o object) ref(k string) (string, error) {
	id, _, err := ref(o, k, nil)
	return id, err
}

// number accepts a JSON number or a numeric string ("-27.5"); it rejects
// NaN and infinities.
func number(field string, v json.RawMessage) (float64, error) {
	var s string
	switch jsonKind(v) {
	case "number":
		s = string(bytes.TrimSpace(v))
	case "string":
		var err error
		if s, err = unquote(v); err != nil {
			return 0, fieldErr(field, "invalid string")
		}
		s = strings.TrimSpace(s)
	default:
		return 0, fieldErr(field, "want number, got %s", jsonKind(v))
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fieldErr(field, "want number, got %q", truncateUTF8(s, 32))
	}
	return f, nil
}

func checkLatLng(field string, lat, lng float64) error {
	if lat < -90 || lat > 90 {
		return fieldErr(field, "latitude %g out of range", lat)
	}
	if lng < -180 || lng > 180 {
		return fieldErr(field, "longitude %g out of range", lng)
	}
	return nil
}

// refKeys are the members read from a populated reference (boxType,
// project): its id, and boxType's code.
var refKeys = []string{"id", "_id", "code"}

// rowKeys are the members of a box row decodeBox reads.
var rowKeys = []string{"id", "_id", "name", "implanted", "boxType", "project", "updatedAt", "coords", "lat", "lng"}

// ref reads a reference that is an id string, a populated object, or null.
// A populated object's members (refKeys) are scanned into sub, when not nil,
// and populated is true.
func ref(o members, k string, sub *fields) (refID string, populated bool, err error) {
	v, ok := get(o, k)
	if !ok {
		return "", false, nil
	}
	switch jsonKind(v) {
	case "string":
		s, _, err := str(o, k)
		return s, false, err
	case "object":
		if sub == nil {
			sub = newFields(refKeys, make([]json.RawMessage, len(refKeys)))
		}
		if err := scanObject(v, &sub.fieldSet); err != nil {
			return "", false, fieldErr(k, "invalid object")
		}
		refID, err := id(sub, k+".")
		return refID, true, err
	default:
		return "", false, fieldErr(k, "want id string or object, got %s", jsonKind(v))
	}
}

func newFields(keys []string, vals []json.RawMessage) *fields {
	return &fields{fieldSet{keys: keys, vals: vals}}
}

// decodeBox decodes one row of GET /api/v2/boxes. It is strict about types
// (a wrong-typed field is an error naming it) and tolerant about presence
// (optional fields may be absent or null) and about numbers sent as strings.
// Member names are matched exactly (as map keys, not as encoding/json's
// case-insensitive struct fields); a repeated member's last value counts.
func decodeBox(raw json.RawMessage) (Box, error) {
	var b Box
	if k := jsonKind(raw); k != "object" {
		return b, &RowError{Reason: "want object, got " + k}
	}
	var vals [10]json.RawMessage
	o := fields{fieldSet{keys: rowKeys, vals: vals[:]}}
	if err := scanObject(raw, &o.fieldSet); err != nil {
		return b, &RowError{Reason: "invalid JSON object"}
	}
	var err error
	if b.ID, err = id(&o, ""); err != nil {
		return b, err
	}
	if b.Name, _, err = str(&o, "name"); err != nil {
		return b, err
	}

	v, ok := get(&o, "implanted")
	switch {
	case !ok:
		return b, fieldErr("implanted", "missing")
	case jsonKind(v) != "boolean":
		return b, fieldErr("implanted", "want boolean, got %s", jsonKind(v))
	}
	b.Implanted = bytes.Equal(bytes.TrimSpace(v), []byte("true"))

	var subVals [3]json.RawMessage
	typ := fields{fieldSet{keys: refKeys, vals: subVals[:]}}
	typeID, populated, err := ref(&o, "boxType", &typ)
	if err != nil {
		return b, err
	}
	b.TypeID = typeID
	if populated {
		if b.TypeCode, _, err = str(&typ, "code"); err != nil {
			var re *RowError
			if errors.As(err, &re) {
				re.Field = "boxType." + re.Field
			}
			return b, err
		}
	}
	clear(subVals[:])
	if b.ProjectID, _, err = ref(&o, "project", &typ); err != nil {
		return b, err
	}

	if s, ok, err := str(&o, "updatedAt"); err != nil {
		return b, err
	} else if ok {
		t, perr := time.Parse(time.RFC3339Nano, s)
		if perr != nil {
			return b, fieldErr("updatedAt", "want RFC 3339 time, got %q", truncateUTF8(s, 40))
		}
		b.UpdatedAt = t
	}

	if err := decodeCoords(&o, &b); err != nil {
		return b, err
	}
	return b, nil
}

// decodeCoords fills Lat/Lng, preferring coords [lng, lat] (GeoJSON order,
// per OZmap's docs/BOX.md) over the top-level lat/lng.
func decodeCoords(o members, b *Box) error {
	var lat, lng float64
	var haveLat, haveLng bool
	if v, ok := get(o, "lat"); ok {
		f, err := number("lat", v)
		if err != nil {
			return err
		}
		lat, haveLat = f, true
	}
	if v, ok := get(o, "lng"); ok {
		f, err := number("lng", v)
		if err != nil {
			return err
		}
		lng, haveLng = f, true
	}

	if v, ok := get(o, "coords"); ok {
		if jsonKind(v) != "array" {
			return fieldErr("coords", "want [lng, lat] array, got %s", jsonKind(v))
		}
		var buf [3]json.RawMessage
		parts, err := scanArray(v, buf[:0])
		if err != nil {
			return fieldErr("coords", "invalid array")
		}
		switch {
		case len(parts) == 0:
			// No coordinates: fall through to lat/lng.
		case len(parts) == 1:
			return fieldErr("coords", "want [lng, lat], got 1 element")
		default: // a third element would be an altitude (GeoJSON); ignore it
			x, err := number("coords[0]", parts[0])
			if err != nil {
				return err
			}
			y, err := number("coords[1]", parts[1])
			if err != nil {
				return err
			}
			if err := checkLatLng("coords", y, x); err != nil {
				return err
			}
			b.Lng, b.Lat, b.HasCoords = x, y, true
			return nil
		}
	}
	if haveLat && haveLng {
		if err := checkLatLng("lat/lng", lat, lng); err != nil {
			return err
		}
		b.Lat, b.Lng, b.HasCoords = lat, lng, true
	}
	return nil
}

// rawForRow copies raw for Row.Raw, bounded to 4 KiB and always valid JSON,
// with the API key removed should a hostile server have echoed it.
func (c *Client) rawForRow(raw json.RawMessage) json.RawMessage {
	raw = bytes.TrimSpace(raw)
	if c.key != "" && bytes.Contains(raw, []byte(c.key)) {
		raw = bytes.ReplaceAll(raw, []byte(c.key), []byte("[REDACTED]"))
	}
	if len(raw) <= maxRawRow && json.Valid(raw) {
		return bytes.Clone(raw)
	}
	s := truncateUTF8(string(raw), maxRawRow-64)
	q, _ := json.Marshal(s)  // escaping may grow it; cut again below
	for len(q) > maxRawRow { // escaping grew it; shrink proportionally
		s = truncateUTF8(s, max(0, len(s)*maxRawRow/len(q)-8))
		q, _ = json.Marshal(s)
	}
	return q
}
