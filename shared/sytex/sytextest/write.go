package sytextest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

// parseBody checks the media type and decodes a JSON object, answering like
// DRF's JSONParser and Serializer when it cannot.
func parseBody(w http.ResponseWriter, r *http.Request, body []byte) (map[string]json.RawMessage, bool) {
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"detail": fmt.Sprintf("Unsupported media type %q in request.", ct)})
		return nil, false
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return map[string]json.RawMessage{}, true
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"detail": "JSON parse error - " + err.Error()})
		return nil, false
	}
	if _, ok := v.(map[string]any); !ok {
		writeJSON(w, http.StatusBadRequest, map[string][]string{
			"non_field_errors": {"Invalid data. Expected a dictionary, but got " + pyType(v) + "."},
		})
		return nil, false
	}
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(body, &fields) // valid: checked above
	return fields, true
}

// pyType names a decoded JSON value the way DRF's messages do.
func pyType(v any) string {
	switch v := v.(type) {
	case nil:
		return "NoneType"
	case bool:
		return "bool"
	case string:
		return "str"
	case float64:
		if v == math.Trunc(v) {
			return "int"
		}
		return "float"
	case []any:
		return "list"
	default:
		return "dict"
	}
}

type coordsIn struct {
	lat, lon float64
}

// change is a validated create or patch.
type change struct {
	name, code *string
	neType     *int64
	coords     *[]coordsIn // non-nil when the set was sent; may be empty
}

// validate checks the writable fields. With partial (PATCH) missing fields
// are not required. Unknown fields are ignored, as DRF does.
func (s *Server) validate(fields map[string]json.RawMessage, partial bool) (change, map[string]any) {
	var c change
	errs := map[string]any{}
	for _, f := range []string{"name", "code"} {
		raw, ok := fields[f]
		if !ok {
			if !partial {
				errs[f] = []string{"This field is required."}
			}
			continue
		}
		v, msg := charField(raw)
		if msg != "" {
			errs[f] = []string{msg}
			continue
		}
		if f == "name" {
			c.name = &v
		} else {
			c.code = &v
		}
	}

	if raw, ok := fields["ne_type"]; ok {
		id, msg := s.pkField(raw)
		if msg != "" {
			errs["ne_type"] = []string{msg}
		} else {
			c.neType = &id
		}
	} else if !partial {
		errs["ne_type"] = []string{"This field is required."}
	}

	if raw, ok := fields["networkelementcoordinates_set"]; ok {
		cs, e := coordsField(raw)
		if e != nil {
			errs["networkelementcoordinates_set"] = e
		} else {
			c.coords = &cs
		}
	}
	return c, errs
}

// charField follows DRF CharField: numbers are turned into text, whitespace
// is trimmed (trim_whitespace=True), blanks and NUL are refused.
func charField(raw json.RawMessage) (string, string) {
	var v any
	_ = json.Unmarshal(raw, &v)
	var s string
	switch t := v.(type) {
	case nil:
		return "", "This field may not be null."
	case string:
		s = t
	case float64:
		s = strings.TrimSpace(string(raw))
	default:
		return "", "Not a valid string."
	}
	if strings.ContainsRune(s, 0) {
		return "", "Null characters are not allowed."
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return "", "This field may not be blank."
	}
	return s, ""
}

// pkField follows DRF PrimaryKeyRelatedField over the configured types.
func (s *Server) pkField(raw json.RawMessage) (int64, string) {
	var v any
	_ = json.Unmarshal(raw, &v)
	var text string
	switch t := v.(type) {
	case nil:
		return 0, "This field may not be null."
	case string:
		text = strings.TrimSpace(t)
	case float64:
		text = strings.TrimSpace(string(raw))
	default:
		return 0, "Incorrect type. Expected pk value, received " + pyType(v) + "."
	}
	id, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		return 0, "Incorrect type. Expected pk value, received " + pyType(v) + "."
	}
	s.mu.Lock()
	ok := s.neTypes[id]
	s.mu.Unlock()
	if !ok {
		return 0, fmt.Sprintf("Invalid pk \"%s\" - object does not exist.", text)
	}
	return id, ""
}

// coordsField validates a nested list the way DRF reports it: one error
// object per item ({} for valid ones).
func coordsField(raw json.RawMessage) ([]coordsIn, any) {
	var v any
	_ = json.Unmarshal(raw, &v)
	items, ok := v.([]any)
	if !ok {
		if v == nil {
			return nil, []string{"This field may not be null."}
		}
		return nil, map[string][]string{"non_field_errors": {"Expected a list of items but got type \"" + pyType(v) + "\"."}}
	}
	var rawItems []json.RawMessage
	_ = json.Unmarshal(raw, &rawItems)
	var out []coordsIn
	itemErrs := make([]map[string][]string, len(items))
	bad := false
	chosen := -1
	for i, it := range items {
		itemErrs[i] = map[string][]string{}
		obj, ok := it.(map[string]any)
		if !ok {
			itemErrs[i]["non_field_errors"] = []string{"Invalid data. Expected a dictionary, but got " + pyType(it) + "."}
			bad = true
			continue
		}
		var fields map[string]json.RawMessage
		_ = json.Unmarshal(rawItems[i], &fields)
		var c coordsIn
		for _, f := range []struct {
			name  string
			limit float64
			dst   *float64
		}{{"latitude", 90, &c.lat}, {"longitude", 180, &c.lon}} {
			fr, present := fields[f.name]
			if !present {
				itemErrs[i][f.name] = []string{"This field is required."}
				bad = true
				continue
			}
			n, msg := decimalField(fr, f.limit)
			if msg != "" {
				itemErrs[i][f.name] = []string{msg}
				bad = true
				continue
			}
			*f.dst = n
		}
		if name, ok := obj["name"]; ok {
			if _, isStr := name.(string); !isStr {
				itemErrs[i]["name"] = []string{"Not a valid string."}
				bad = true
			} else if name == "Coordinates" && chosen < 0 {
				chosen = len(out)
			}
		}
		out = append(out, c)
	}
	if bad {
		return nil, itemErrs
	}
	// The simulator keeps one point: the entry named "Coordinates", else the
	// first.
	if len(out) > 1 {
		if chosen < 0 {
			chosen = 0
		}
		out = out[chosen : chosen+1]
	}
	return out, nil
}

// decimalField follows DRF DecimalField: a number or a numeric string,
// within [-limit, limit], stored rounded to 6 places.
func decimalField(raw json.RawMessage, limit float64) (float64, string) {
	var v any
	_ = json.Unmarshal(raw, &v)
	var text string
	switch t := v.(type) {
	case nil:
		return 0, "This field may not be null."
	case string:
		text = strings.TrimSpace(t)
	case float64:
		text = strings.TrimSpace(string(raw))
	default:
		return 0, "A valid number is required."
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || strings.ContainsAny(text, "xXpP_") {
		return 0, "A valid number is required."
	}
	switch {
	case f < -limit:
		return 0, "Ensure this value is greater than or equal to " + strconv.FormatFloat(-limit, 'f', -1, 64) + "."
	case f > limit:
		return 0, "Ensure this value is less than or equal to " + strconv.FormatFloat(limit, 'f', -1, 64) + "."
	}
	return round6(f), ""
}

func (s *Server) apply(e *stored, c change) {
	if c.name != nil {
		e.Name = *c.name
	}
	if c.code != nil {
		e.Code = *c.code
	}
	if c.neType != nil {
		e.NEType = *c.neType
	}
	if c.coords != nil {
		if len(*c.coords) == 0 {
			e.HasCoords, e.Latitude, e.Longitude, e.coordID = false, 0, 0, 0
		} else {
			p := (*c.coords)[0]
			e.HasCoords, e.Latitude, e.Longitude = true, p.lat, p.lon
			e.coordID = s.nextCoordID // the entry is replaced, so it gets a new id
			s.nextCoordID++
		}
	}
	s.index.put(e)
}

func (s *Server) create(w http.ResponseWriter, fields map[string]json.RawMessage) {
	c, errs := s.validate(fields, false)
	if len(errs) > 0 {
		writeJSON(w, http.StatusBadRequest, errs)
		return
	}
	s.mu.Lock()
	// Names are not unique in Sytex: duplicates are stored, as the real
	// service does.
	e := &stored{Element: Element{ID: s.nextID}}
	s.nextID++
	s.apply(e, c)
	s.elems[e.ID] = e
	out := s.serialize(e)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) patch(w http.ResponseWriter, id int64, fields map[string]json.RawMessage) {
	s.mu.Lock()
	_, exists := s.elems[id]
	s.mu.Unlock()
	if !exists {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not found."})
		return
	}
	c, errs := s.validate(fields, true)
	if len(errs) > 0 {
		writeJSON(w, http.StatusBadRequest, errs)
		return
	}
	s.mu.Lock()
	e, ok := s.elems[id]
	var out elementJSON
	if ok {
		s.apply(e, c)
		out = s.serialize(e)
	}
	s.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not found."})
		return
	}
	writeJSON(w, http.StatusOK, out)
}
