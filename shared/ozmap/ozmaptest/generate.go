package ozmaptest

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// DefaultBoxTypes returns the three box types common in FTTH networks, with
// fixed ids: CTO (terminal box), CEO (splice closure) and CTX.
func DefaultBoxTypes() []BoxType {
	return []BoxType{
		{ID: "64b000000000000000000001", Code: "CTO", Brand: "Furukawa", Mold: "CTO-16", Prefix: "CTO", Description: "Caixa de Terminação Óptica", DefaultLevel: 3},
		{ID: "64b000000000000000000002", Code: "CEO", Brand: "Furukawa", Mold: "CEO-144", Prefix: "CEO", Description: "Caixa de Emenda Óptica", DefaultLevel: 2},
		{ID: "64b000000000000000000003", Code: "CTX", Brand: "Fibracem", Mold: "CTX-8", Prefix: "CTX", Description: "Caixa de Transição", DefaultLevel: 4},
	}
}

// GenerateBoxes returns n realistic boxes, deterministic for a given seed:
// names like "CTO-FLN-0001", coords around Florianópolis (-27.59, -48.55),
// about 10% not implanted (in project), box types drawn from types (boxType
// is null when types is empty), spread over a few projects.
func GenerateBoxes(n int, seed int64, types []BoxType) []Box {
	rnd := rand.New(rand.NewPCG(uint64(seed), 0x6f7a6d6170)) // "ozmap"
	id := func() string {
		return fmt.Sprintf("%08x%016x", rnd.Uint32(), rnd.Uint64())
	}
	projects := make([]string, 3)
	for i := range projects {
		projects[i] = id()
	}
	base := time.Date(2019, 10, 15, 19, 25, 41, 0, time.UTC)
	boxes := make([]Box, n)
	for i := range boxes {
		code, level := "CX", 1
		var boxType any
		if len(types) > 0 {
			t := types[rnd.IntN(len(types))]
			boxType, code, level = t.ID, t.Code, t.DefaultLevel
		}
		implanted := rnd.IntN(10) != 0
		lat := -27.59 + (rnd.Float64()-0.5)*0.2
		lng := -48.55 + (rnd.Float64()-0.5)*0.2
		created := base.Add(time.Duration(rnd.Int64N(int64(4 * 365 * 24 * time.Hour))))
		updated := created.Add(time.Duration(rnd.Int64N(int64(365 * 24 * time.Hour))))
		boxes[i] = Box{
			ID:             id(),
			Kind:           "Box",
			Name:           fmt.Sprintf("%s-FLN-%04d", code, i+1),
			Coords:         []float64{lng, lat},
			Lat:            lat,
			Lng:            lng,
			Implanted:      implanted,
			Draft:          !implanted && rnd.IntN(2) == 0,
			Certified:      implanted && rnd.IntN(4) == 0,
			BoxType:        boxType,
			HierarchyLevel: level,
			Project:        projects[rnd.IntN(len(projects))],
			Pole:           id(),
			Tags:           []string{},
			Cables:         []string{id()},
			CreatedAt:      created.Truncate(time.Millisecond),
			UpdatedAt:      updated.Truncate(time.Millisecond),
		}
	}
	return boxes
}
