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

// object is a decoded JSON object whose members are kept raw.
type object map[string]json.RawMessage

// get returns the member, treating null like absence.
func (o object) get(k string) (json.RawMessage, bool) {
	v, ok := o[k]
	if !ok || jsonKind(v) == "null" {
		return nil, false
	}
	return v, true
}

func (o object) str(k string) (string, bool, error) {
	v, ok := o.get(k)
	if !ok {
		return "", false, nil
	}
	if jsonKind(v) != "string" {
		return "", false, fieldErr(k, "want string, got %s", jsonKind(v))
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", false, fieldErr(k, "invalid string")
	}
	return s, true, nil
}

// id reads "id", falling back to "_id".
func (o object) id(prefix string) (string, error) {
	for _, k := range []string{"id", "_id"} {
		s, ok, err := o.str(k)
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

// number accepts a JSON number or a numeric string ("-27.5"); it rejects
// NaN and infinities.
func number(field string, v json.RawMessage) (float64, error) {
	var s string
	switch jsonKind(v) {
	case "number":
		s = string(bytes.TrimSpace(v))
	case "string":
		if err := json.Unmarshal(v, &s); err != nil {
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

// ref reads a reference that is an id string, a populated object, or null.
func (o object) ref(k string) (id string, obj object, err error) {
	v, ok := o.get(k)
	if !ok {
		return "", nil, nil
	}
	switch jsonKind(v) {
	case "string":
		s, _, err := o.str(k)
		return s, nil, err
	case "object":
		var sub object
		if err := json.Unmarshal(v, &sub); err != nil {
			return "", nil, fieldErr(k, "invalid object")
		}
		id, err := sub.id(k + ".")
		return id, sub, err
	default:
		return "", nil, fieldErr(k, "want id string or object, got %s", jsonKind(v))
	}
}

// decodeBox decodes one row of GET /api/v2/boxes. It is strict about types
// (a wrong-typed field is an error naming it) and tolerant about presence
// (optional fields may be absent or null) and about numbers sent as strings.
func decodeBox(raw json.RawMessage) (Box, error) {
	var b Box
	if k := jsonKind(raw); k != "object" {
		return b, &RowError{Reason: "want object, got " + k}
	}
	var o object
	if err := json.Unmarshal(raw, &o); err != nil {
		return b, &RowError{Reason: "invalid JSON object"}
	}
	var err error
	if b.ID, err = o.id(""); err != nil {
		return b, err
	}
	if b.Name, _, err = o.str("name"); err != nil {
		return b, err
	}

	v, ok := o.get("implanted")
	switch {
	case !ok:
		return b, fieldErr("implanted", "missing")
	case jsonKind(v) != "boolean":
		return b, fieldErr("implanted", "want boolean, got %s", jsonKind(v))
	}
	b.Implanted = bytes.Equal(bytes.TrimSpace(v), []byte("true"))

	id, typ, err := o.ref("boxType")
	if err != nil {
		return b, err
	}
	b.TypeID = id
	if typ != nil {
		if b.TypeCode, _, err = typ.str("code"); err != nil {
			var re *RowError
			if errors.As(err, &re) {
				re.Field = "boxType." + re.Field
			}
			return b, err
		}
	}
	if b.ProjectID, _, err = o.ref("project"); err != nil {
		return b, err
	}

	if s, ok, err := o.str("updatedAt"); err != nil {
		return b, err
	} else if ok {
		t, perr := time.Parse(time.RFC3339Nano, s)
		if perr != nil {
			return b, fieldErr("updatedAt", "want RFC 3339 time, got %q", truncateUTF8(s, 40))
		}
		b.UpdatedAt = t
	}

	if err := decodeCoords(o, &b); err != nil {
		return b, err
	}
	return b, nil
}

// decodeCoords fills Lat/Lng, preferring coords [lng, lat] (GeoJSON order,
// per OZmap's docs/BOX.md) over the top-level lat/lng.
func decodeCoords(o object, b *Box) error {
	var lat, lng float64
	var haveLat, haveLng bool
	if v, ok := o.get("lat"); ok {
		f, err := number("lat", v)
		if err != nil {
			return err
		}
		lat, haveLat = f, true
	}
	if v, ok := o.get("lng"); ok {
		f, err := number("lng", v)
		if err != nil {
			return err
		}
		lng, haveLng = f, true
	}

	if v, ok := o.get("coords"); ok {
		if jsonKind(v) != "array" {
			return fieldErr("coords", "want [lng, lat] array, got %s", jsonKind(v))
		}
		var parts []json.RawMessage
		if err := json.Unmarshal(v, &parts); err != nil {
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
