package rehearsal_test

import (
	"testing"
	"time"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap/ozmaptest"
)

// OZMAP_PROJECT_IDS limits a sync to some projects: their eligible boxes
// reach Sytex, no other project's do.
func TestProjectIDsLimitTheSync(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	env := start(t)
	defer env.Close()
	boxes := ozmaptest.GenerateBoxes(120, 5, ozmaptest.DefaultBoxTypes())
	env.OZmap.PutBoxes(boxes)
	for _, bt := range ozmaptest.DefaultBoxTypes() {
		env.OZmap.PutBoxType(bt)
	}
	byProject := map[string][]ozmaptest.Box{}
	for _, b := range boxes {
		byProject[b.Project] = append(byProject[b.Project], b)
	}
	if len(byProject) < 3 {
		t.Fatalf("want boxes in 3 projects, have %d", len(byProject))
	}
	var chosen []string
	for p := range byProject {
		if len(chosen) < 2 {
			chosen = append(chosen, p)
		}
	}
	env.Extra = map[string]string{"OZMAP_PROJECT_IDS": chosen[0] + ", " + chosen[1]}
	produce(t, ctx, env)
	drain(t, ctx, env, 1)

	in := map[string]bool{chosen[0]: true, chosen[1]: true}
	want := 0
	for _, b := range boxes {
		got := len(env.Sytex.ElementsByName(b.Name))
		switch {
		case in[b.Project] && b.Implanted:
			want++
			if got != 1 {
				t.Errorf("box %s of a chosen project: %d elements in Sytex, want 1", b.Name, got)
			}
		case got != 0:
			t.Errorf("box %s (project %s, implanted %v) reached Sytex", b.Name, b.Project, b.Implanted)
		}
	}
	if n := len(env.Sytex.Elements()); n != want || want == 0 {
		t.Errorf("Sytex holds %d elements, want %d", n, want)
	}
}
