package ozmaptest

import (
	"net/url"
	"testing"
)

// The cached listing must follow every change to the boxes, per filter.
func TestListingFollowsChanges(t *testing.T) {
	s := NewServer(key)
	defer s.Close()
	s.PutBoxes(GenerateBoxes(30, 1, nil))
	implanted := "/api/v2/boxes?limit=1000&filter=" + url.QueryEscape(`[{"property":"implanted","operator":"=","value":true}]`)
	all := "/api/v2/boxes?limit=1000"
	count := func(pq string) int { return getPage(t, s, pq).Total }
	nAll, nImpl := count(all), count(implanted)
	if nAll != 30 || nImpl >= nAll {
		t.Fatalf("all %d, implanted %d", nAll, nImpl)
	}
	b := s.Boxes()[0]
	b.Implanted = !b.Implanted
	s.PutBox(b)
	want := nImpl + 1
	if !b.Implanted {
		want = nImpl - 1
	}
	if got := count(implanted); got != want {
		t.Fatalf("after flipping implanted: %d implanted boxes, want %d", got, want)
	}
	s.PutBox(Box{Name: "new", Implanted: true, Coords: []float64{-48.5, -27.5}})
	if got := count(all); got != 31 {
		t.Fatalf("after PutBox: %d boxes, want 31", got)
	}
	s.DeleteBox(b.ID)
	if got := count(all); got != 30 {
		t.Fatalf("after DeleteBox: %d boxes, want 30", got)
	}
	want++ // the new box
	if b.Implanted {
		want--
	}
	if got := count(implanted); got != want {
		t.Fatalf("after DeleteBox: %d implanted, want %d", got, want)
	}
}
