package runreport

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx/natstest"
)

// Consumers merge counts while the producer records its summary: every count
// lands once in run.<id>, and "last" ends equal to it, whoever wrote last.
func TestConcurrentWritersLoseNothing(t *testing.T) {
	concurrentWriters(t, natstest.Start(t, natsx.Topology{}), 1)
}

// On a three-node cluster, with the bucket replicated, compare-and-set
// conflicts come back as another error code while a write is in flight.
func TestConcurrentWritersLoseNothingInACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	concurrentWriters(t, natstest.StartCluster(t, 3), 3)
}

func concurrentWriters(t *testing.T, js jetstream.JetStream, replicas int) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	store, err := Open(ctx, js, replicas)
	if err != nil {
		t.Fatal(err)
	}
	// An older run is "last" to begin with; its counts must not move.
	old := Summary{RunID: "20261201T210000Z", Started: time.Now().Add(-time.Hour), Finished: time.Now().Add(-time.Hour)}
	if _, err := store.RecordRun(ctx, old); err != nil {
		t.Fatal(err)
	}

	const runID = "20261202T210000Z"
	const writers, each = 6, 15
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				d := Synced{Created: 1, Unchanged: 2, DeadLettered: i % 2, Last: time.Now()}
				if w == 0 {
					d = Synced{Updated: 3, Last: time.Now()}
				}
				if err := store.Merge(ctx, runID, Batch{Writer: fmt.Sprint("w", w), Seq: uint64(i + 1), Synced: d}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	sum := Summary{RunID: runID, Started: time.Now(), Read: 100, Eligible: 90, Published: 90, Skipped: map[string]int{"invalid": 2}}
	time.Sleep(5 * time.Millisecond)
	sum.Finished = time.Now()
	if _, err := store.RecordRun(ctx, sum); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	run, err := store.Get(ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	want := Synced{Created: (writers - 1) * each, Unchanged: 2 * (writers - 1) * each, Updated: 3 * each,
		DeadLettered: (writers - 1) * (each / 2)}
	got := run.Synced
	got.Last = time.Time{}
	if got != want {
		t.Fatalf("run.%s counts = %+v, want %+v", runID, got, want)
	}
	if !run.Ended() || run.Read != 100 || run.Skipped["invalid"] != 2 {
		t.Fatalf("producer summary lost: %+v", run.Summary)
	}
	last, err := store.Last(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last.Revision = 0
	if last.RunID != runID || last.Synced != run.Synced || last.Read != run.Read || last.DryRun != nil {
		t.Fatalf("last = %+v\nwant a copy of %+v", last, run)
	}
	if o, err := store.Get(ctx, old.RunID); err != nil || !o.Synced.IsZero() {
		t.Fatalf("older run changed: %+v, %v", o, err)
	}
}

// Counts for an earlier run (a replay) go to that run, not to "last".
func TestCountsForAnOlderRunLeaveLastAlone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.Start(t, natsx.Topology{})
	store, err := Open(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"20261201T210000Z", "20261202T210000Z"} {
		if _, err := store.RecordRun(ctx, Summary{RunID: id, Started: time.Now(), Finished: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.Merge(ctx, "20261201T210000Z", Batch{Synced: Synced{Created: 4}, DryRun: false}); err != nil {
		t.Fatal(err)
	}
	last, _ := store.Last(ctx)
	if last.RunID != "20261202T210000Z" || !last.Synced.IsZero() {
		t.Fatalf("last = %+v", last)
	}
	if r, _ := store.Get(ctx, "20261201T210000Z"); r.Synced.Created != 4 {
		t.Fatalf("old run = %+v", r)
	}
	// Consumer counts for a run the producer has not finished do not make
	// it look ended (another replica would take it for done).
	if err := store.Merge(ctx, "20261203T210000Z", Batch{Synced: Synced{Created: 1}, DryRun: false}); err != nil {
		t.Fatal(err)
	}
	if r, err := store.Get(ctx, "20261203T210000Z"); err != nil || r.Ended() {
		t.Fatalf("running run = %+v, %v", r, err)
	}
	for _, bad := range []string{"", "a.b", "run>", "x y"} {
		if err := store.Merge(ctx, bad, Batch{Synced: Synced{Created: 1}, DryRun: false}); err == nil {
			t.Errorf("run id %q accepted as a key", bad)
		}
	}
}

// A dry run's counts are kept apart from what was really done.
func TestDryRunCountsApart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := Open(ctx, natstest.Start(t, natsx.Topology{}), 1)
	if err != nil {
		t.Fatal(err)
	}
	const id = "20261201T210000Z"
	for range 2 {
		if err := store.Merge(ctx, id, Batch{Synced: Synced{WouldCreate: 2, Unchanged: 1}, DryRun: true}); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.Merge(ctx, id, Batch{Synced: Synced{Created: 2, Unchanged: 1}, DryRun: false}); err != nil {
		t.Fatal(err)
	}
	r, err := store.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if r.DryRun == nil || *r.DryRun != (Synced{WouldCreate: 4, Unchanged: 2}) || r.Synced != (Synced{Created: 2, Unchanged: 1}) {
		t.Fatalf("synced %+v, dry run %+v", r.Synced, r.DryRun)
	}
}

// A batch retried after an ambiguous failure (its write landed, the answer
// was lost) is counted once; the writer's next batch counts again.
func TestRetriedBatchCountsOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := Open(ctx, natstest.Start(t, natsx.Topology{}), 1)
	if err != nil {
		t.Fatal(err)
	}
	const id = "20261201T210000Z"
	b := Batch{Writer: "host-1-ab12", Seq: 7, Synced: Synced{Created: 3}}
	for range 3 {
		if err := store.Merge(ctx, id, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.Merge(ctx, id, Batch{Writer: "host-2-cd34", Seq: 1, Synced: Synced{Created: 1}}); err != nil {
		t.Fatal(err)
	}
	b.Seq, b.Synced = 8, Synced{Updated: 2}
	if err := store.Merge(ctx, id, b); err != nil {
		t.Fatal(err)
	}
	r, err := store.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if r.Synced.Created != 4 || r.Synced.Updated != 2 {
		t.Fatalf("synced %+v; want created 4 (3 once, 1), updated 2", r.Synced)
	}
}

// "last" is the newest run: an older run finishing late does not replace it.
func TestOlderRunDoesNotReplaceLast(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := Open(ctx, natstest.Start(t, natsx.Topology{}), 1)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	newer := Summary{RunID: "20261202T210000Z", Started: now, Finished: now.Add(time.Minute)}
	older := Summary{RunID: "20261202T205500Z-once-ab12", Started: now.Add(-5 * time.Minute), Finished: now.Add(2 * time.Minute)}
	for _, s := range []Summary{newer, older} {
		if _, err := store.RecordRun(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if last, _ := store.Last(ctx); last.RunID != newer.RunID {
		t.Fatalf("last = %s, want the newer run %s", last.RunID, newer.RunID)
	}
}
