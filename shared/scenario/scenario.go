// Package scenario seeds the OZmap and Sytex simulators with a realistic
// night's work and says what the sync must do with it. The demo, the
// integration tests and the benchmarks share it, so they agree on what
// "correct" means.
package scenario

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap/ozmaptest"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/sytex/sytextest"
)

// NETypeMap is the SYTEX_NE_TYPE_MAP matching the simulators' box types and
// Sytex's default ne_type ids.
const NETypeMap = "CTO=321,CEO=322,CTX=323"

// NETypes is NETypeMap as a map.
var NETypes = map[string]int64{"CTO": 321, "CEO": 322, "CTX": 323}

// Mix says how many boxes of each kind to plant. Percentages of the eligible
// boxes; the rest are new (absent from Sytex).
type Mix struct {
	Boxes          int     // OZmap boxes in all
	InProjectPct   float64 // not implanted: must never reach Sytex
	UnchangedPct   float64 // already in Sytex, identical
	UpdatedPct     float64 // in Sytex with other coordinates or type
	NearMisses     int     // Sytex elements whose names contain a box's name ("<name>-OLD")
	InvalidRows    int     // eligible boxes with an empty name or coordinates out of range
	DuplicateNames int     // eligible boxes renamed to an other eligible box's name
	Rejected       int     // boxes Sytex answers 400 for on create
}

// Demo is the mix `make demo` shows.
var Demo = Mix{Boxes: 300, InProjectPct: 10, UnchangedPct: 50, UpdatedPct: 20, NearMisses: 10, InvalidRows: 2, DuplicateNames: 1, Rejected: 1}

// Expect is what a correct sync leaves behind.
type Expect struct {
	Eligible   map[string]bool // OZmap ids of implanted boxes
	InProject  []string        // names that must not be in Sytex
	Created    []string        // names
	Updated    []string
	Unchanged  []string
	Invalid    []string // OZmap ids dead-lettered by the producer as invalid rows
	Losers     []string // OZmap ids dead-lettered as losing duplicate names
	Rejected   []string // names Sytex rejects (dead-lettered by the consumer)
	NearMisses map[int64]sytextest.Element
	// Want is the element every synced name must end up as.
	Want map[string]sytextest.Element
}

// Seed plants mix into the simulators and returns the expected result. It is
// deterministic for a given seed.
func Seed(oz *ozmaptest.Server, sy *sytextest.Server, mix Mix, seed int64) Expect {
	types := ozmaptest.DefaultBoxTypes()
	for _, t := range types {
		oz.PutBoxType(t)
	}
	boxes := ozmaptest.GenerateBoxes(mix.Boxes, seed, types)
	code := map[string]string{}
	for _, t := range types {
		code[t.ID] = t.Code
	}
	ex := Expect{Eligible: map[string]bool{}, NearMisses: map[int64]sytextest.Element{}, Want: map[string]sytextest.Element{}}
	// Set implanted by position so the mix is exact, not random.
	nIn := int(float64(mix.Boxes) * mix.InProjectPct / 100)
	var eligible []*ozmaptest.Box
	for i := range boxes {
		b := &boxes[i]
		b.Implanted = i >= nIn
		if b.Implanted {
			eligible = append(eligible, b)
		} else {
			ex.InProject = append(ex.InProject, b.Name)
		}
	}
	// Special rows take the last eligible boxes.
	take := func(n int) []*ozmaptest.Box {
		n = min(n, len(eligible))
		out := eligible[len(eligible)-n:]
		eligible = eligible[:len(eligible)-n]
		return out
	}
	for i, b := range take(mix.InvalidRows) {
		if i%2 == 0 {
			b.Name = "  "
		} else {
			b.Coords = []float64{-48.5, -127.6} // latitude out of range
			b.Lat, b.Lng = -127.6, -48.5
		}
		ex.Invalid = append(ex.Invalid, b.ID)
	}
	for _, b := range take(mix.DuplicateNames) {
		// The loser shares the name of an older-updated winner: the winner
		// keeps a later updatedAt, so it wins whatever the paging order.
		w := eligible[0]
		b.Name = w.Name
		b.UpdatedAt = w.UpdatedAt.Add(-24 * time.Hour)
		ex.Losers = append(ex.Losers, b.ID)
	}
	rejected := map[string]bool{}
	for _, b := range take(mix.Rejected) {
		b.Name = b.Name + " (rejected)"
		rejected[b.Name] = true
		ex.Rejected = append(ex.Rejected, b.Name)
	}
	nUnchanged := int(float64(len(eligible)) * mix.UnchangedPct / 100)
	nUpdated := int(float64(len(eligible)) * mix.UpdatedPct / 100)
	for i, b := range eligible {
		lat, lng := b.Coords[1], b.Coords[0]
		neType := NETypes[code[fmt.Sprint(b.BoxType)]]
		want := sytextest.Element{Name: b.Name, Code: b.Name, NEType: neType, Latitude: round6(lat), Longitude: round6(lng), HasCoords: true}
		ex.Want[b.Name] = want
		switch {
		case i < nUnchanged:
			sy.Seed(want)
			ex.Unchanged = append(ex.Unchanged, b.Name)
		case i < nUnchanged+nUpdated:
			stale := want
			if i%2 == 0 {
				stale.Latitude += 0.0005
			} else {
				stale.NEType = 323 + 321 - neType // another valid type
				if stale.NEType == neType {
					stale.Longitude -= 0.001
				}
			}
			sy.Seed(stale)
			ex.Updated = append(ex.Updated, b.Name)
		default:
			ex.Created = append(ex.Created, b.Name)
		}
	}
	// Near misses: names a substring search for a box finds, but that are
	// not the box. They must be left exactly as they are.
	for i := 0; i < mix.NearMisses && i < len(eligible); i++ {
		b := eligible[i]
		e := sy.Seed(sytextest.Element{Name: b.Name + "-OLD", Code: "X" + b.Name, NEType: 322, Latitude: -10, Longitude: -40, HasCoords: true})
		ex.NearMisses[e.ID] = e
	}
	for _, b := range boxes {
		if b.Implanted {
			ex.Eligible[b.ID] = true
		}
	}
	oz.PutBoxes(boxes)
	if len(rejected) > 0 {
		sy.FailMatching(RejectNames(rejected))
	}
	sort.Strings(ex.Created)
	sort.Strings(ex.Updated)
	sort.Strings(ex.Unchanged)
	return ex
}

// RejectNames makes the Sytex simulator answer 400 to a create of one of
// names, as Sytex does for data it will not store.
func RejectNames(names map[string]bool) func(r *http.Request) (int, string, bool) {
	return func(r *http.Request) (int, string, bool) {
		if r.Method != http.MethodPost {
			return 0, "", false
		}
		var body struct {
			Name string `json:"name"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil || !names[body.Name] {
			return 0, "", false
		}
		return http.StatusBadRequest, `{"code": ["Network element code contains characters that are not allowed."]}`, true
	}
}

func round6(f float64) float64 { return math.Round(f*1e6) / 1e6 }

// Check compares the Sytex simulator with what the sync should have done
// and returns every difference, so a test prints them all at once.
func (ex Expect) Check(sy *sytextest.Server) []string {
	var problems []string
	byName := map[string][]sytextest.Element{}
	for _, e := range sy.Elements() {
		byName[e.Name] = append(byName[e.Name], e)
	}
	for name, want := range ex.Want {
		got := byName[name]
		switch {
		case len(got) == 0:
			problems = append(problems, fmt.Sprintf("missing in Sytex: %q", name))
		case len(got) > 1:
			problems = append(problems, fmt.Sprintf("duplicated in Sytex: %q ×%d", name, len(got)))
		default:
			g := got[0]
			if g.NEType != want.NEType || math.Abs(g.Latitude-want.Latitude) > 1e-6 || math.Abs(g.Longitude-want.Longitude) > 1e-6 {
				problems = append(problems, fmt.Sprintf("%q: Sytex has type %d at %.6f,%.6f; want type %d at %.6f,%.6f",
					name, g.NEType, g.Latitude, g.Longitude, want.NEType, want.Latitude, want.Longitude))
			}
		}
	}
	for _, name := range ex.InProject {
		if len(byName[name]) > 0 {
			problems = append(problems, fmt.Sprintf("in-project box reached Sytex: %q", name))
		}
	}
	for _, name := range ex.Rejected {
		if len(byName[name]) > 0 {
			problems = append(problems, fmt.Sprintf("rejected box is in Sytex: %q", name))
		}
	}
	for id, want := range ex.NearMisses {
		got, ok := sy.Element(id)
		if !ok || got != want {
			problems = append(problems, fmt.Sprintf("near-miss element %d %q was touched: %+v", id, want.Name, got))
		}
	}
	for name, es := range byName {
		if strings.TrimSpace(name) == "" {
			problems = append(problems, fmt.Sprintf("element with a blank name: %+v", es))
		}
	}
	sort.Strings(problems)
	return problems
}
