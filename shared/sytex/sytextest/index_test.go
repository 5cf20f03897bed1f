package sytextest

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// The trigram index must find exactly what a scan of every element finds,
// also after elements are replaced or renamed.
func TestNameIndexMatchesAFullScan(t *testing.T) {
	s := &Server{elems: map[int64]*stored{}}
	rnd := rand.New(rand.NewPCG(1, 2))
	words := []string{"CTO", "cto", "CEO", "Ñandú", "ÇAIXA", "x", "FLN", "-", "0", "12", "ab"}
	name := func() string {
		var b strings.Builder
		for range 1 + rnd.IntN(4) {
			b.WriteString(words[rnd.IntN(len(words))])
		}
		return b.String()
	}
	put := func(id int64) {
		e := &stored{Element: Element{ID: id, Name: name(), Code: name()}}
		s.elems[id] = e
		s.index.put(e)
	}
	for id := int64(1); id <= 300; id++ {
		put(id)
	}
	for id := int64(1); id <= 300; id += 7 {
		put(id) // replaced
	}
	for id := int64(2); id <= 300; id += 11 {
		e := s.elems[id]
		e.Name = "" // renamed to nothing
		s.index.put(e)
	}
	for i := range 500 {
		q := strings.ToLower(name())
		if i%5 == 0 {
			q = q[:min(len(q), 3)]
		}
		var scan, indexed []int64
		for id, e := range s.elems {
			if strings.Contains(strings.ToLower(e.Name), q) || strings.Contains(strings.ToLower(e.Code), q) {
				scan = append(scan, id)
			}
		}
		ids, ok := s.index.candidates(q)
		if !ok {
			continue
		}
		for id := range ids {
			n, c := s.index.lower(s.elems[id])
			if strings.Contains(n, q) || strings.Contains(c, q) {
				indexed = append(indexed, id)
			}
		}
		slices.Sort(scan)
		slices.Sort(indexed)
		if !slices.Equal(scan, indexed) {
			t.Fatalf("q=%q: scan %v, index %v", q, scan, indexed)
		}
	}
}
