package ozmap

// The map-based decoder this package used before the single-pass scanner
// (jsonscan.go), kept as the reference the scanner must agree with.

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
)

// refObject is a decoded JSON object whose members are kept raw.
type refObject map[string]json.RawMessage

// get returns the member, treating null like absence.
func (o refObject) get(k string) (json.RawMessage, bool) {
	v, ok := o[k]
	if !ok || jsonKind(v) == "null" {
		return nil, false
	}
	return v, true
}

func (o refObject) str(k string) (string, bool, error) {
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
func (o refObject) id(prefix string) (string, error) {
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

// ref reads a reference that is an id string, a populated object, or null.
func (o refObject) ref(k string) (id string, obj refObject, err error) {
	v, ok := o.get(k)
	if !ok {
		return "", nil, nil
	}
	switch jsonKind(v) {
	case "string":
		s, _, err := o.str(k)
		return s, nil, err
	case "object":
		var sub refObject
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
func refDecodeBox(raw json.RawMessage) (Box, error) {
	var b Box
	if k := jsonKind(raw); k != "object" {
		return b, &RowError{Reason: "want object, got " + k}
	}
	var o refObject
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

	if err := refDecodeCoords(o, &b); err != nil {
		return b, err
	}
	return b, nil
}

// decodeCoords fills Lat/Lng, preferring coords [lng, lat] (GeoJSON order,
// per OZmap's docs/BOX.md) over the top-level lat/lng.
func refDecodeCoords(o refObject, b *Box) error {
	var lat, lng float64
	var haveLat, haveLng bool
	if v, ok := o.get("lat"); ok {
		f, err := refNumber("lat", v)
		if err != nil {
			return err
		}
		lat, haveLat = f, true
	}
	if v, ok := o.get("lng"); ok {
		f, err := refNumber("lng", v)
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
			x, err := refNumber("coords[0]", parts[0])
			if err != nil {
				return err
			}
			y, err := refNumber("coords[1]", parts[1])
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

// number accepts a JSON number or a numeric string ("-27.5"); it rejects
// NaN and infinities.
func refNumber(field string, v json.RawMessage) (float64, error) {
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
