package outcomes

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/consumer/upsert"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/consumer/worker"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/box"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/boxstatus"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/deadletter"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx/natstest"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/runreport"
)

const runID = "20261203T210000Z"

func event(id string, e worker.Event) worker.Event {
	e.Box = box.Box{ID: id, Name: "CTO-" + id[20:], RunID: runID}
	return e
}

// What the workers did ends up once in the run report and in each box's
// status, even when a merge fails and is retried.
func TestRecorderCountsOnceAndRecordsStatuses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.Start(t, natsx.Topology{}, jetstream.WithPublishAsyncTimeout(5*time.Second))
	runs, err := runreport.Open(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	statuses, err := boxstatus.Open(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	r := &Recorder{Status: boxstatus.NewWriter(js, log), Runs: runs, Log: log}
	r.Record(event("000000000000000000000001", worker.Event{Result: upsert.Result{Outcome: upsert.Created, ElementID: 7}}))
	r.Record(event("000000000000000000000002", worker.Event{Result: upsert.Result{Outcome: upsert.Updated, ElementID: 8, Changed: []string{"coordinates"}}}))
	r.Record(event("000000000000000000000003", worker.Event{Result: upsert.Result{Outcome: upsert.Unchanged, ElementID: 9}}))
	r.Record(event("000000000000000000000004", worker.Event{Retried: true, Err: errors.New("503"), Attempts: 1}))
	r.Record(event("000000000000000000000004", worker.Event{Kind: deadletter.KindExhausted, Reason: "Sytex failed 10 times", Err: errors.New("503"), Attempts: 10}))
	r.Flush(ctx)
	r.Flush(ctx) // nothing new: nothing added

	// A merge that fails (the bucket is gone) is kept and retried as is.
	r.Record(event("000000000000000000000005", worker.Event{Result: upsert.Result{Outcome: upsert.Created, ElementID: 10}}))
	if err := js.DeleteKeyValue(ctx, natsx.RunsBucket); err != nil {
		t.Fatal(err)
	}
	r.Flush(ctx)
	if runs, err = runreport.Open(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	r.Runs = runs
	r.Record(event("000000000000000000000006", worker.Event{Result: upsert.Result{Outcome: upsert.Unchanged, ElementID: 11}}))
	r.Flush(ctx) // the kept batch
	r.Flush(ctx) // then the new counts

	rep, err := runs.Get(ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	got := rep.Synced
	got.Last = time.Time{}
	// The first four events' counts went with the deleted bucket; the
	// kept batch (box 5) and the new one (box 6) are each counted once.
	if want := (runreport.Synced{Created: 1, Unchanged: 1}); got != want {
		t.Fatalf("synced %+v, want %+v", got, want)
	}
	for id, want := range map[string]string{
		"000000000000000000000001": boxstatus.Created, "000000000000000000000002": boxstatus.Updated,
		"000000000000000000000004": boxstatus.Failed, "000000000000000000000006": boxstatus.Unchanged,
	} {
		st, err := boxstatus.Get(ctx, statuses, id)
		if err != nil || st.Outcome != want || st.RunID != runID {
			t.Errorf("status of %s: %+v, %v; want %s", id, st, err, want)
		}
	}
	if st, _ := boxstatus.Get(ctx, statuses, "000000000000000000000004"); st.DeadLetter != "max-attempts" || st.Attempts != 10 || st.Error == "" {
		t.Errorf("dead-lettered status %+v", st)
	}
}

// Counts of a dry run go to the report's dry-run part.
func TestRecorderDryRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.Start(t, natsx.Topology{})
	runs, err := runreport.Open(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	r := &Recorder{Runs: runs, DryRun: true, Log: slog.New(slog.DiscardHandler)}
	r.Record(event("000000000000000000000001", worker.Event{Result: upsert.Result{Outcome: upsert.WouldCreate}}))
	r.Record(event("000000000000000000000002", worker.Event{Result: upsert.Result{Outcome: upsert.WouldUpdate}}))
	r.Flush(ctx)
	rep, err := runs.Get(ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	if rep.DryRun == nil || rep.DryRun.WouldCreate != 1 || rep.DryRun.WouldUpdate != 1 || !rep.Synced.IsZero() {
		t.Fatalf("synced %+v, dry run %+v", rep.Synced, rep.DryRun)
	}
}
