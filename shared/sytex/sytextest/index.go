package sytextest

import "strings"

// trigram is three consecutive bytes of a lowercased name or code.
type trigram [3]byte

// nameIndex lets a search (q, a case-insensitive substring of the name or
// the code) look only at the elements that hold every trigram of the query,
// instead of lowercasing and scanning every element under the lock: with
// tens of thousands of elements the scan made the simulator, not the client
// under test, the bottleneck of a benchmark. The answer is the same; the
// candidates are still checked with the full search conditions.
type nameIndex struct {
	grams map[trigram]map[int64]struct{}
	of    map[int64]filing
}

// filing is how one element is indexed.
type filing struct {
	name, code string    // lowercased
	grams      []trigram // the trigrams it is filed under
}

// put files e under the trigrams of its lowercased name and code, replacing
// whatever it was filed under before. Call with s.mu held, after every
// change to e's name or code.
func (x *nameIndex) put(e *stored) {
	name, code := strings.ToLower(e.Name), strings.ToLower(e.Code)
	old, filed := x.of[e.ID]
	if filed && name == old.name && code == old.code {
		return
	}
	if x.grams == nil {
		x.grams, x.of = map[trigram]map[int64]struct{}{}, map[int64]filing{}
	}
	for _, g := range old.grams {
		delete(x.grams[g], e.ID)
	}
	seen := map[trigram]bool{}
	var gs []trigram
	for _, s := range []string{name, code} {
		for i := 0; i+3 <= len(s); i++ {
			g := trigram{s[i], s[i+1], s[i+2]}
			if seen[g] {
				continue
			}
			seen[g] = true
			gs = append(gs, g)
			set := x.grams[g]
			if set == nil {
				set = map[int64]struct{}{}
				x.grams[g] = set
			}
			set[e.ID] = struct{}{}
		}
	}
	x.of[e.ID] = filing{name: name, code: code, grams: gs}
}

// lower returns e's lowercased name and code.
func (x *nameIndex) lower(e *stored) (name, code string) {
	if f, ok := x.of[e.ID]; ok {
		return f.name, f.code
	}
	return strings.ToLower(e.Name), strings.ToLower(e.Code)
}

// candidates returns the ids of the elements that may contain q (already
// lowercased) in their name or code: those filed under its rarest trigram.
// ok is false when q is shorter than a trigram and every element must be
// looked at.
func (x *nameIndex) candidates(q string) (ids map[int64]struct{}, ok bool) {
	if len(q) < 3 {
		return nil, false
	}
	for i := 0; i+3 <= len(q); i++ {
		set := x.grams[trigram{q[i], q[i+1], q[i+2]}]
		if len(set) == 0 {
			return nil, true // no element holds this trigram: no match
		}
		if ids == nil || len(set) < len(ids) {
			ids = set
		}
	}
	return ids, true
}
