package syncrun

import (
	"testing"
	"unsafe"
)

func TestPackedIDRoundTrip(t *testing.T) {
	for _, id := range []string{
		"5d9f3ff9200141000647f814", "000000000000000000000000", "ffffffffffffffffffffffff",
		"FFFFFFFFFFFFFFFFFFFFFFFF", "5D9F3ff9200141000647F81a", "aBcDeF0123456789AbCdEf99",
	} {
		p, ok := packID(id)
		if !ok || p.String() != id {
			t.Errorf("packID(%q) = %v, %v: String() %q", id, p, ok, p.String())
		}
	}
	for _, id := range []string{"", "5d9f3ff9200141000647f81", "5d9f3ff9200141000647f8144", "5d9f3ff9200141000647f81g", "5d9f3ff9200141000647f81 "} {
		if _, ok := packID(id); ok {
			t.Errorf("packID(%q) accepted an invalid id", id)
		}
	}
}

func TestWinnerOrderIsTheIDStrings(t *testing.T) {
	// Mixed case: "a" > "B" as strings although 0xa < 0xb.
	lo, hi := "5d9f3ff9200141000647f81B", "5d9f3ff9200141000647f81a"
	p, _ := packID(lo)
	if w := (winner{id: p, updated: 5}); !w.beatenBy(hi, 5) || w.beatenBy(lo, 5) || w.beatenBy(hi, 4) || !w.beatenBy(lo, 6) {
		t.Fatal("beatenBy does not follow updatedAt, then the id strings")
	}
	p, _ = packID(hi)
	if w := (winner{id: p, updated: 5}); w.beatenBy(lo, 5) {
		t.Fatal("a lower id string won")
	}
}

func TestIndexEntryIsPointerFreeAnd40Bytes(t *testing.T) {
	if n := unsafe.Sizeof(nameKey{}) + unsafe.Sizeof(winner{}); n != 40 {
		t.Fatalf("index entry is %d bytes, want 40", n)
	}
}
