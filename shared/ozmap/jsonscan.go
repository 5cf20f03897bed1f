package ozmap

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// A small validating JSON scanner for the hot path: it walks a row (or the
// rows array of a page) once, checks it is valid JSON exactly as
// encoding/json's scanner does (same grammar, same 10000 nesting limit), and
// hands back the raw bytes of the members it was asked for. It replaces
// json.Unmarshal into map[string]json.RawMessage, which scans every row twice
// and allocates a map and a copy of every member.

// maxNestingDepth is encoding/json's limit.
const maxNestingDepth = 10000

var errScan = errors.New("invalid JSON")

type scanner struct {
	b     []byte
	i     int
	depth int
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (s *scanner) ws() {
	for s.i < len(s.b) && isSpace(s.b[s.i]) {
		s.i++
	}
}

// value skips one value (after whitespace), validating it, and returns its
// bytes.
func (s *scanner) value() ([]byte, error) {
	s.ws()
	if s.i >= len(s.b) {
		return nil, errScan
	}
	start := s.i
	var err error
	switch c := s.b[s.i]; {
	case c == '"':
		_, err = s.str()
	case c == '{':
		err = s.object(nil)
	case c == '[':
		err = s.array(nil)
	case c == 't':
		err = s.lit("true")
	case c == 'f':
		err = s.lit("false")
	case c == 'n':
		err = s.lit("null")
	case c == '-' || c >= '0' && c <= '9':
		err = s.number()
	default:
		err = errScan
	}
	if err != nil {
		return nil, err
	}
	return s.b[start:s.i], nil
}

func (s *scanner) lit(l string) error {
	if len(s.b)-s.i < len(l) || string(s.b[s.i:s.i+len(l)]) != l {
		return errScan
	}
	s.i += len(l)
	return nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func (s *scanner) number() error {
	b, i := s.b, s.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		return errScan
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return errScan
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return errScan
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	s.i = i
	return nil
}

func isHex(c byte) bool { return isDigit(c) || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// str skips a string (s.b[s.i] == '"') and reports whether it is "plain":
// no escapes and valid UTF-8, so its contents are its value as they are.
func (s *scanner) str() (plain bool, err error) {
	b, i := s.b, s.i+1
	plain = true
	ascii := true
	for {
		if i >= len(b) {
			return false, errScan
		}
		c := b[i]
		switch {
		case c == '"':
			if !ascii && plain {
				plain = utf8.Valid(b[s.i+1 : i])
			}
			s.i = i + 1
			return plain, nil
		case c < 0x20:
			return false, errScan
		case c == '\\':
			plain = false
			if i+1 >= len(b) {
				return false, errScan
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return false, errScan
				}
				i += 6
			default:
				return false, errScan
			}
		default:
			if c >= utf8.RuneSelf {
				ascii = false
			}
			i++
		}
	}
}

// object skips an object (s.b[s.i] == '{'). For each member whose key is in
// keys, vals[k] is set to the member's raw value (the last one wins, as in
// encoding/json).
func (s *scanner) object(f *fieldSet) error {
	s.depth++
	if s.depth > maxNestingDepth {
		return errScan
	}
	s.i++ // '{'
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		s.depth--
		return nil
	}
	for {
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return errScan
		}
		kstart := s.i
		plain, err := s.str()
		if err != nil {
			return err
		}
		key := s.b[kstart+1 : s.i-1]
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return errScan
		}
		s.i++
		v, err := s.value()
		if err != nil {
			return err
		}
		if f != nil {
			f.set(key, plain, s.b[kstart:kstart+len(key)+2], v)
		}
		s.ws()
		if s.i >= len(s.b) {
			return errScan
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			s.depth--
			return nil
		default:
			return errScan
		}
	}
}

// array skips an array (s.b[s.i] == '['), appending each element to *elems
// when elems is not nil.
func (s *scanner) array(elems *[]json.RawMessage) error {
	s.depth++
	if s.depth > maxNestingDepth {
		return errScan
	}
	s.i++ // '['
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		s.depth--
		return nil
	}
	for {
		v, err := s.value()
		if err != nil {
			return err
		}
		if elems != nil {
			*elems = append(*elems, v)
		}
		s.ws()
		if s.i >= len(s.b) {
			return errScan
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			s.depth--
			return nil
		default:
			return errScan
		}
	}
}

// end checks that only whitespace follows.
func (s *scanner) end() error {
	s.ws()
	if s.i != len(s.b) {
		return errScan
	}
	return nil
}

// fieldSet collects the members of an object with the given keys, compared
// exactly (like map keys, unlike encoding/json's case-insensitive struct
// fields), after unescaping.
type fieldSet struct {
	keys []string
	vals []json.RawMessage // vals[k] is the value of keys[k]; nil when absent
	// fold matches keys as encoding/json matches struct fields: exactly or
	// case-insensitively (bytes.EqualFold, which is what it uses).
	fold bool
	// arrays, when not nil, also gets the last value of each key that was
	// an array (see parsePage: a null "rows" after an array keeps it).
	arrays []json.RawMessage
}

func (f *fieldSet) set(key []byte, plain bool, quoted, v []byte) {
	if !plain {
		var k string
		if json.Unmarshal(quoted, &k) != nil {
			return
		}
		key = []byte(k)
	}
	for k, name := range f.keys {
		if string(key) == name || f.fold && bytes.EqualFold(key, []byte(name)) {
			f.vals[k] = v
			if f.arrays != nil && v[0] == '[' {
				f.arrays[k] = v
			}
			return
		}
	}
}

// scanObject validates raw as one JSON object (with optional surrounding
// whitespace) and fills f with the members it asks for. The values alias raw.
func scanObject(raw []byte, f *fieldSet) error {
	s := scanner{b: raw}
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return errScan
	}
	if err := s.object(f); err != nil {
		return err
	}
	return s.end()
}

// scanArray validates raw as one JSON array and returns its elements, which
// alias raw.
func scanArray(raw []byte, elems []json.RawMessage) ([]json.RawMessage, error) {
	s := scanner{b: raw}
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '[' {
		return nil, errScan
	}
	if err := s.array(&elems); err != nil {
		return nil, err
	}
	return elems, s.end()
}

// unquote returns the value of a JSON string literal; plain strings (no
// escapes, valid UTF-8) without a second scan.
func unquote(v []byte) (string, error) {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		plain := true
		ascii := true
		for _, c := range v[1 : len(v)-1] {
			if c == '\\' || c == '"' || c < 0x20 {
				plain = false
				break
			}
			if c >= utf8.RuneSelf {
				ascii = false
			}
		}
		if plain && (ascii || utf8.Valid(v[1:len(v)-1])) {
			return string(v[1 : len(v)-1]), nil
		}
	}
	var s string
	err := json.Unmarshal(v, &s)
	return s, err
}
