package sytex

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// CoordinatesName is the name of the coordinates entry the sync reads and
// writes in networkelementcoordinates_set.
const CoordinatesName = "Coordinates"

// CoordinateTolerance is the largest difference, in degrees, under which two
// coordinates are the same point: Sytex stores about 6 decimal places.
const CoordinateTolerance = 1e-6

// Coordinates is a point in decimal degrees.
type Coordinates struct {
	Latitude, Longitude float64
}

// Equal reports whether c and o are the same point within CoordinateTolerance.
func (c Coordinates) Equal(o Coordinates) bool {
	return math.Abs(c.Latitude-o.Latitude) <= CoordinateTolerance &&
		math.Abs(c.Longitude-o.Longitude) <= CoordinateTolerance
}

// NamedCoordinates is one entry of networkelementcoordinates_set.
type NamedCoordinates struct {
	ID                  int64
	Name                string
	Latitude, Longitude float64
}

// Element is a Sytex network element as read back.
type Element struct {
	ID       int64
	Name     string
	Code     string
	NETypeID int64 // 0 if absent or null
	// Coordinates holds the entries of networkelementcoordinates_set; an
	// entry whose latitude or longitude is null is left out.
	Coordinates []NamedCoordinates
}

// Location returns the entry named "Coordinates", or else the first entry.
func (e Element) Location() (Coordinates, bool) {
	for _, c := range e.Coordinates {
		if c.Name == CoordinatesName {
			return Coordinates{c.Latitude, c.Longitude}, true
		}
	}
	if len(e.Coordinates) > 0 {
		c := e.Coordinates[0]
		return Coordinates{c.Latitude, c.Longitude}, true
	}
	return Coordinates{}, false
}

// Decoding is tolerant of DRF habits (shared/reference/sytex-api.md, "Reads
// follow DRF habits"): ids may be numeric strings, ne_type may be an id, an
// object or null, decimals may be strings, the coordinates set may be absent.
// It is strict where a wrong guess would be harmful: an element without a
// usable id or a string name cannot be matched or patched.

type wireElement struct {
	ID     json.RawMessage `json:"id"`
	Name   json.RawMessage `json:"name"`
	Code   json.RawMessage `json:"code"`
	NEType json.RawMessage `json:"ne_type"`
	Coords json.RawMessage `json:"networkelementcoordinates_set"`
}

type wireCoords struct {
	ID        json.RawMessage `json:"id"`
	Name      json.RawMessage `json:"name"`
	Latitude  json.RawMessage `json:"latitude"`
	Longitude json.RawMessage `json:"longitude"`
}

type wirePage struct {
	Next    json.RawMessage `json:"next"`
	Results json.RawMessage `json:"results"`
}

// decodeError is a shape problem; the caller turns it into a *ResponseError.
type decodeError string

func (e decodeError) Error() string { return string(e) }

func shapeErr(format string, a ...any) error { return decodeError(fmt.Sprintf(format, a...)) }

func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

func firstByte(raw json.RawMessage) byte {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return 0
	}
	return t[0]
}

// parseInt accepts a JSON integer or a string holding one.
func parseInt(raw json.RawMessage) (int64, bool) {
	t := bytes.TrimSpace(raw)
	if len(t) > 0 && t[0] == '"' {
		var s string
		if json.Unmarshal(t, &s) != nil {
			return 0, false
		}
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		return n, err == nil
	}
	n, err := strconv.ParseInt(string(t), 10, 64)
	return n, err == nil
}

// parseFloat accepts a JSON number or a string holding a finite decimal.
func parseFloat(raw json.RawMessage) (float64, bool) {
	t := bytes.TrimSpace(raw)
	s := string(t)
	if len(t) > 0 && t[0] == '"' {
		if json.Unmarshal(t, &s) != nil {
			return 0, false
		}
		s = strings.TrimSpace(s)
	}
	if s == "" || strings.ContainsAny(s, "xXpP_") { // no hex floats or digit separators
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

func parseString(raw json.RawMessage) (string, bool) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || t[0] != '"' {
		return "", false
	}
	var s string
	return s, json.Unmarshal(t, &s) == nil
}

func decodeElement(raw json.RawMessage) (Element, error) {
	if firstByte(raw) != '{' {
		return Element{}, shapeErr("element is not a JSON object")
	}
	var w wireElement
	if err := json.Unmarshal(raw, &w); err != nil {
		return Element{}, shapeErr("element: %v", err)
	}
	var e Element
	var ok bool
	if e.ID, ok = parseInt(w.ID); !ok || e.ID <= 0 {
		return Element{}, shapeErr("element id is missing or not a positive integer")
	}
	if e.Name, ok = parseString(w.Name); !ok {
		return Element{}, shapeErr("element %d: name is missing or not a string", e.ID)
	}
	switch {
	case isNull(w.Code):
	case firstByte(w.Code) == '"':
		e.Code, _ = parseString(w.Code)
	default:
		// A numeric code is harmless; keep its text.
		if _, ok := parseFloat(w.Code); !ok {
			return Element{}, shapeErr("element %d: code is not a string", e.ID)
		}
		e.Code = string(bytes.TrimSpace(w.Code))
	}
	if e.NETypeID, ok = decodeNEType(w.NEType); !ok {
		return Element{}, shapeErr("element %d: ne_type is neither an id nor an object with an id", e.ID)
	}
	coords, err := decodeCoords(w.Coords)
	if err != nil {
		return Element{}, shapeErr("element %d: %v", e.ID, err)
	}
	e.Coordinates = coords
	return e, nil
}

// decodeNEType reads an id, {"id": ...}, or null (0).
func decodeNEType(raw json.RawMessage) (int64, bool) {
	if isNull(raw) {
		return 0, true
	}
	if firstByte(raw) == '{' {
		var obj struct {
			ID json.RawMessage `json:"id"`
		}
		if json.Unmarshal(raw, &obj) != nil {
			return 0, false
		}
		if isNull(obj.ID) {
			return 0, true
		}
		return parseInt(obj.ID)
	}
	return parseInt(raw)
}

func decodeCoords(raw json.RawMessage) ([]NamedCoordinates, error) {
	if isNull(raw) {
		return nil, nil
	}
	if firstByte(raw) != '[' {
		return nil, shapeErr("networkelementcoordinates_set is not a list")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, shapeErr("networkelementcoordinates_set: %v", err)
	}
	var out []NamedCoordinates
	for i, it := range items {
		if firstByte(it) != '{' {
			return nil, shapeErr("networkelementcoordinates_set[%d] is not an object", i)
		}
		var w wireCoords
		if err := json.Unmarshal(it, &w); err != nil {
			return nil, shapeErr("networkelementcoordinates_set[%d]: %v", i, err)
		}
		if isNull(w.Latitude) || isNull(w.Longitude) {
			continue // an empty point: as if absent
		}
		var c NamedCoordinates
		var ok bool
		if c.Latitude, ok = parseFloat(w.Latitude); !ok {
			return nil, shapeErr("networkelementcoordinates_set[%d]: latitude is not a number", i)
		}
		if c.Longitude, ok = parseFloat(w.Longitude); !ok {
			return nil, shapeErr("networkelementcoordinates_set[%d]: longitude is not a number", i)
		}
		if !isNull(w.ID) {
			if c.ID, ok = parseInt(w.ID); !ok {
				return nil, shapeErr("networkelementcoordinates_set[%d]: id is not an integer", i)
			}
		}
		if !isNull(w.Name) {
			if c.Name, ok = parseString(w.Name); !ok {
				return nil, shapeErr("networkelementcoordinates_set[%d]: name is not a string", i)
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// decodePage reads a DRF page {"next", "results"}; a bare list (an
// unpaginated view) is accepted as a single page.
func decodePage(raw []byte) (elems []Element, next string, err error) {
	// Fast path: one pass over a well-formed page. Anything unusual goes
	// the careful way below, for a precise error.
	if firstByte(raw) == '{' {
		var p struct {
			Next    json.RawMessage   `json:"next"`
			Results []json.RawMessage `json:"results"`
		}
		if json.Unmarshal(raw, &p) == nil && p.Results != nil {
			if isNull(p.Next) {
				return decodeItems(p.Results, "")
			}
			if next, ok := parseString(p.Next); ok {
				return decodeItems(p.Results, next)
			}
		}
	}
	var results json.RawMessage
	switch firstByte(raw) {
	case '[':
		results = raw
	case '{':
		var p wirePage
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, "", shapeErr("page: %v", err)
		}
		if firstByte(p.Results) != '[' {
			return nil, "", shapeErr(`page has no "results" list`)
		}
		if !isNull(p.Next) {
			var ok bool
			if next, ok = parseString(p.Next); !ok {
				return nil, "", shapeErr(`page "next" is neither a string nor null`)
			}
		}
		results = p.Results
	default:
		return nil, "", shapeErr("body is not JSON")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(results, &items); err != nil {
		return nil, "", shapeErr("results: %v", err)
	}
	return decodeItems(items, next)
}

func decodeItems(items []json.RawMessage, next string) (elems []Element, _ string, err error) {
	elems = make([]Element, 0, len(items))
	for _, it := range items {
		e, err := decodeElement(it)
		if err != nil {
			return nil, "", err
		}
		elems = append(elems, e)
	}
	return elems, next, nil
}

// decodeOne reads a single element body (create/update answers).
func decodeOne(raw []byte) (Element, error) {
	if firstByte(raw) != '{' {
		return Element{}, shapeErr("body is not a JSON object")
	}
	if !json.Valid(raw) {
		return Element{}, shapeErr("body is not valid JSON")
	}
	return decodeElement(raw)
}
