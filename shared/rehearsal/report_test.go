package rehearsal_test

import (
	"testing"
	"time"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/boxstatus"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap/ozmaptest"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/scenario"
)

// boxIDsByName maps OZmap box names to ids.
func boxIDsByName(oz *ozmaptest.Server) map[string]string {
	m := map[string]string{}
	for _, b := range oz.Boxes() {
		m[b.Name] = b.ID
	}
	return m
}

// A first rollout: the consumers run with CONSUMER_DRY_RUN=true, write
// nothing, and the run report and box statuses say what they would have
// done. Then the same run is replayed for real and the report adds what was
// done.
func TestDryRunRecordsWithoutWritingThenReplayForReal(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	env := start(t)
	defer env.Close()
	ex := scenario.Seed(env.OZmap, env.Sytex, scenario.Demo, 42)
	before := len(env.Sytex.Elements())
	env.Sytex.ResetCounts()

	env.Extra = map[string]string{"CONSUMER_DRY_RUN": "true"}
	produce(t, ctx, env)
	drain(t, ctx, env, 2)

	if n := env.Sytex.Counts(); n.Create+n.Update != 0 || len(env.Sytex.Elements()) != before {
		t.Fatalf("dry run wrote to Sytex: %+v, %d elements (was %d)", n, len(env.Sytex.Elements()), before)
	}
	rep := lastReport(t, ctx, env)
	wantWouldCreate := len(ex.Created) + len(ex.Rejected) // nothing was sent, so nothing was rejected
	if rep.DryRun == nil || !rep.Synced.IsZero() {
		t.Fatalf("dry-run report: synced %+v, dry_run %+v; want only dry_run", rep.Synced, rep.DryRun)
	}
	if s := *rep.DryRun; s.WouldCreate != wantWouldCreate || s.WouldUpdate != len(ex.Updated) ||
		s.Unchanged != len(ex.Unchanged) || s.Created+s.Updated+s.DeadLettered != 0 {
		t.Fatalf("dry-run report counts %+v; want would_create %d, would_update %d, unchanged %d and nothing done",
			s, wantWouldCreate, len(ex.Updated), len(ex.Unchanged))
	}
	ids := boxIDsByName(env.OZmap)
	if st := boxStatus(t, ctx, env, ids[ex.Created[0]]); st.Outcome != boxstatus.WouldCreate || !st.DryRun || st.RunID != rep.RunID {
		t.Fatalf("status of %q after the dry run: %+v", ex.Created[0], st)
	}
	if st := boxStatus(t, ctx, env, ids[ex.Updated[0]]); st.Outcome != boxstatus.WouldUpdate || len(st.Changed) == 0 || st.SytexID == 0 {
		t.Fatalf("status of %q after the dry run: %+v", ex.Updated[0], st)
	}

	// For real: the boxes of that run are still on the work stream.
	env.Extra = nil
	replay(t, ctx, env, "-run", rep.RunID)
	drain(t, ctx, env, 2)
	checkSytex(t, ex, env.Sytex)
	rep = lastReport(t, ctx, env)
	if s := rep.Synced; s.Created != len(ex.Created) || s.Updated != len(ex.Updated) || s.Unchanged != len(ex.Unchanged) ||
		s.DeadLettered != len(ex.Rejected) || rep.DryRun == nil || rep.DryRun.WouldCreate != wantWouldCreate {
		t.Fatalf("report after the real replay: %+v (dry run %+v); want created %d, updated %d, unchanged %d, dead_lettered %d, the dry run kept",
			s, rep.DryRun, len(ex.Created), len(ex.Updated), len(ex.Unchanged), len(ex.Rejected))
	}
	st := boxStatus(t, ctx, env, ids[ex.Created[0]])
	if st.Outcome != boxstatus.Created || st.DryRun || st.SytexID == 0 {
		t.Fatalf("status of %q after the real run: %+v", ex.Created[0], st)
	}
	if el := env.Sytex.ElementsByName(ex.Created[0]); len(el) != 1 || el[0].ID != st.SytexID {
		t.Fatalf("status says Sytex id %d, Sytex has %+v", st.SytexID, el)
	}
	rejected := deadLetters(t, ctx, env)["sytex-rejected"]
	if len(rejected) != 1 {
		t.Fatalf("sytex-rejected letters: %v", rejected)
	}
	if st := boxStatus(t, ctx, env, rejected[0]); st.Outcome != boxstatus.Failed || st.DeadLetter != "sytex-rejected" || st.Error == "" {
		t.Fatalf("status of the rejected box: %+v", st)
	}
	// The producer's dead letters are box statuses too.
	if st := boxStatus(t, ctx, env, ex.Losers[0]); st.Outcome != boxstatus.Failed || st.DeadLetter != "duplicate-name" {
		t.Fatalf("status of a losing duplicate: %+v", st)
	}
}
