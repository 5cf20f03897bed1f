package ozmaptest

import (
	"encoding/json"
	"fmt"
	"slices"
)

// condition is one element of OZmap's filter parameter:
// [{"property":"implanted","operator":"=","value":true}].
type condition struct {
	Property string          `json:"property"`
	Operator string          `json:"operator"`
	Value    json.RawMessage `json:"value"`
}

type fieldKind int

const (
	kindString fieldKind = iota
	kindBool
)

var (
	boxFields     = map[string]fieldKind{"id": kindString, "name": kindString, "project": kindString, "implanted": kindBool}
	boxTypeFields = map[string]fieldKind{"id": kindString, "code": kindString}
)

func boxFieldValue(b Box) func(string) any {
	return func(p string) any {
		switch p {
		case "id":
			return b.ID
		case "name":
			return b.Name
		case "project":
			return b.Project
		case "implanted":
			return b.Implanted
		}
		return nil
	}
}

func boxTypeFieldValue(t BoxType) func(string) any {
	return func(p string) any {
		switch p {
		case "id":
			return t.ID
		case "code":
			return t.Code
		}
		return nil
	}
}

// compile checks conds against the route's fields and returns a predicate
// that is true when every condition holds (OZmap ANDs filter conditions).
// The simulator supports "=", "!=" and "in"; OZmap knows more operators,
// which answer 400 here so a client relying on them notices.
func compile(conds []condition, fields map[string]fieldKind) (func(get func(string) any) bool, error) {
	type test struct {
		prop   string
		negate bool
		values []any
	}
	tests := make([]test, 0, len(conds))
	for i, c := range conds {
		kind, ok := fields[c.Property]
		if !ok {
			return nil, fmt.Errorf("filter[%d]: unknown property %q", i, c.Property)
		}
		decode := func(raw json.RawMessage) (any, error) {
			if kind == kindBool {
				var b bool
				err := json.Unmarshal(raw, &b)
				return b, err
			}
			var s string
			err := json.Unmarshal(raw, &s)
			return s, err
		}
		want := "a string"
		if kind == kindBool {
			want = "a boolean"
		}
		t := test{prop: c.Property}
		switch c.Operator {
		case "=", "!=":
			if len(c.Value) == 0 || string(c.Value) == "null" {
				return nil, fmt.Errorf("filter[%d]: value for %q must be %s", i, c.Property, want)
			}
			v, err := decode(c.Value)
			if err != nil {
				return nil, fmt.Errorf("filter[%d]: value for %q must be %s", i, c.Property, want)
			}
			t.negate = c.Operator == "!="
			t.values = []any{v}
		case "in":
			var raws []json.RawMessage
			if err := json.Unmarshal(c.Value, &raws); err != nil || raws == nil {
				return nil, fmt.Errorf("filter[%d]: value for \"in\" must be an array", i)
			}
			for _, r := range raws {
				v, err := decode(r)
				if err != nil || string(r) == "null" {
					return nil, fmt.Errorf("filter[%d]: values for %q must be %s", i, c.Property, want)
				}
				t.values = append(t.values, v)
			}
		default:
			return nil, fmt.Errorf("filter[%d]: unsupported operator %q", i, c.Operator)
		}
		tests = append(tests, t)
	}
	return func(get func(string) any) bool {
		for _, t := range tests {
			if slices.Contains(t.values, get(t.prop)) == t.negate {
				return false
			}
		}
		return true
	}, nil
}
