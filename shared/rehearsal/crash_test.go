package rehearsal_test

// Crash, restart and failover tests: the real binaries are killed (SIGKILL),
// stopped (SIGTERM), run as several replicas, or lose their NATS server, and
// each test checks the end state an operator would check: what Sytex holds,
// what the dead-letter stream holds, and that no element is duplicated or
// missing. Every wait polls for an end state under a context deadline.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/producer/syncrun"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap/ozmaptest"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/rehearsal"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/runreport"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/scenario"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/sytex/sytextest"
)

// --- helpers ---------------------------------------------------------------

// waitFor polls cond every 50 ms until it holds, failing the test with what
// when ctx ends first.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// startConsumers starts n consumers; any still running at the end of the
// test is killed.
func startConsumers(t *testing.T, ctx context.Context, env *rehearsal.Env, n int) []*rehearsal.Process {
	t.Helper()
	var cs []*rehearsal.Process
	for i := 0; i < n; i++ {
		c, err := env.StartConsumer(ctx)
		if err != nil {
			t.Fatalf("start consumer %d: %v", i+1, err)
		}
		t.Cleanup(func() {
			if c.Running() {
				c.Kill()
			}
		})
		cs = append(cs, c)
	}
	return cs
}

// startProducer starts a producer daemon, killed at the end of the test if
// still running.
func startProducer(t *testing.T, ctx context.Context, env *rehearsal.Env) *rehearsal.Process {
	t.Helper()
	p, err := env.StartProducer(ctx)
	if err != nil {
		t.Fatalf("start producer daemon: %v", err)
	}
	t.Cleanup(func() {
		if p.Running() {
			p.Kill()
		}
	})
	return p
}

// stopAll sends SIGTERM to every process and fails the test for any that
// does not exit 0.
func stopAll(t *testing.T, ps ...*rehearsal.Process) {
	t.Helper()
	for i, p := range ps {
		if err := p.Stop(60 * time.Second); err != nil {
			t.Errorf("process %d did not exit 0 on SIGTERM: %v\n%s", i+1, err, p.Logs())
		}
	}
}

// waitIdle waits until the consumers have nothing left, failing with the
// programs' logs.
func waitIdle(t *testing.T, ctx context.Context, env *rehearsal.Env) {
	t.Helper()
	if err := env.WaitIdle(ctx); err != nil {
		t.Fatalf("backlog not drained: %v\nlogs:\n%s", err, env.Logs())
	}
}

// consumerInfo reads sytex-upsert's state, retrying through a NATS restart
// or a leader election.
func consumerInfo(t *testing.T, ctx context.Context, env *rehearsal.Env) *jetstream.ConsumerInfo {
	t.Helper()
	for {
		c, err := env.JS.Consumer(ctx, natsx.WorkStream, natsx.UpsertConsumer)
		if err == nil {
			var info *jetstream.ConsumerInfo
			if info, err = c.Info(ctx); err == nil {
				return info
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("consumer info: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// streamState reads a stream's state, retrying through a NATS restart or a
// leader election.
func streamState(t *testing.T, ctx context.Context, env *rehearsal.Env, name string) jetstream.StreamState {
	t.Helper()
	for {
		s, err := env.JS.Stream(ctx, name)
		if err == nil {
			var info *jetstream.StreamInfo
			if info, err = s.Info(ctx); err == nil {
				return info.State
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("stream %s info: %v", name, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkEachBoxOnce checks that the work stream holds every eligible box
// exactly once and that nothing was ever stored twice: no sequence was spent
// on a second copy of a box (one message per subject would hide it).
func checkEachBoxOnce(t *testing.T, ctx context.Context, env *rehearsal.Env, boxes int) {
	t.Helper()
	st := streamState(t, ctx, env, natsx.WorkStream)
	if st.Msgs != uint64(boxes) || st.LastSeq != uint64(boxes) {
		t.Errorf("%s holds %d messages (last sequence %d); want each of the %d boxes stored once (%d and %d)",
			natsx.WorkStream, st.Msgs, st.LastSeq, boxes, boxes, boxes)
	}
}

// checkNoDeadLetters fails the test if the DLQ holds anything.
func checkNoDeadLetters(t *testing.T, ctx context.Context, env *rehearsal.Env) {
	t.Helper()
	if dl := deadLetters(t, ctx, env); len(dl) > 0 {
		t.Errorf("dead letters: %v, want none", dl)
	}
}

// checkElementCount checks Sytex holds exactly the expected elements: every
// wanted name once, the near misses, nothing else.
func checkElementCount(t *testing.T, ex scenario.Expect, env *rehearsal.Env) {
	t.Helper()
	if got, want := len(env.Sytex.Elements()), len(ex.Want)+len(ex.NearMisses); got != want {
		t.Errorf("Sytex holds %d elements, want %d", got, want)
	}
}

// newBoxes is a mix of new boxes only: every eligible box must be created.
func newBoxes(n int) scenario.Mix { return scenario.Mix{Boxes: n, InProjectPct: 10} }

// runReport reads a run's report from OZMAP_SYNC_RUNS once the producer has
// ended the run (consumers may start a report before that).
func runReport(ctx context.Context, env *rehearsal.Env, runID string) (runreport.Report, bool) {
	kv, err := env.JS.KeyValue(ctx, natsx.RunsBucket)
	if err != nil {
		return runreport.Report{}, false
	}
	e, err := kv.Get(ctx, runreport.Key(runID))
	if err != nil {
		return runreport.Report{}, false
	}
	var r runreport.Report
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return runreport.Report{}, false
	}
	return r, r.Ended()
}

// runKeys lists the run reports in OZMAP_SYNC_RUNS.
func runKeys(t *testing.T, ctx context.Context, env *rehearsal.Env) []string {
	t.Helper()
	kv, err := env.JS.KeyValue(ctx, natsx.RunsBucket)
	if err != nil {
		t.Fatalf("open %s: %v", natsx.RunsBucket, err)
	}
	keys, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("list %s: %v", natsx.RunsBucket, err)
	}
	var out []string
	for _, k := range keys {
		if strings.HasPrefix(k, "run.") {
			out = append(out, k)
		}
	}
	return out
}

// logCount counts the log lines with message msg about run runID.
func logCount(logs, msg, runID string) int {
	n := 0
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, `msg="`+msg+`"`) && strings.Contains(line, "run_id="+runID) {
			n++
		}
	}
	return n
}

// sytexElement is what a box must become in Sytex.
func sytexElement(b ozmaptest.Box, neType int64) sytextest.Element {
	return sytextest.Element{Name: b.Name, Code: b.Name, NEType: neType, HasCoords: true,
		Latitude: math.Round(b.Coords[1]*1e6) / 1e6, Longitude: math.Round(b.Coords[0]*1e6) / 1e6}
}

// dailyAt is a 5-field cron expression for t's minute every day (read in UTC).
func dailyAt(t time.Time) string {
	t = t.UTC()
	return fmt.Sprintf("%d %d * * *", t.Minute(), t.Hour())
}

// --- tests -----------------------------------------------------------------

// Scenario 1: a consumer is killed (SIGKILL) in the middle of a run. Its
// unacked boxes come back to the other consumer after CONSUMER_ACK_WAIT and
// Sytex ends with every box once.
func TestConsumerKilledMidRun(t *testing.T) {
	ctx := testCtx(t, 120*time.Second)
	env := start(t)
	defer env.Close()
	env.Extra["CONSUMER_ACK_WAIT"] = "5s" // the least config.go accepts
	env.Extra["SYTEX_TIMEOUT"] = "2s"
	env.Extra["CONSUMER_CONCURRENCY"] = "4"
	ex := scenario.Seed(env.OZmap, env.Sytex, newBoxes(200), 11)
	produce(t, ctx, env)
	env.Sytex.SetLatency(100 * time.Millisecond) // the run takes a few seconds

	cs := startConsumers(t, ctx, env, 2)
	var held int
	waitFor(t, ctx, "a quarter of the boxes in Sytex, and boxes in hand", func() bool {
		held = consumerInfo(t, ctx, env).NumAckPending
		return env.Sytex.Counts().Create >= int64(len(ex.Created)/4) && held > 0
	})
	cs[0].Kill()
	after := len(env.Sytex.Elements())
	t.Logf("killed consumer 1 with %d boxes unacked across both consumers, %d of %d elements in Sytex", held, after, len(ex.Want))
	if held == 0 || after >= len(ex.Want) {
		t.Fatalf("the kill did not land mid-run: %d unacked, %d of %d elements", held, after, len(ex.Want))
	}

	waitIdle(t, ctx, env)
	stopAll(t, cs[1])
	checkSytex(t, ex, env.Sytex)
	checkElementCount(t, ex, env)
	checkNoDeadLetters(t, ctx, env)
	// A create the killed consumer had on the wire is counted by the
	// simulator but never happens: at most CONSUMER_CONCURRENCY such.
	if n := env.Sytex.Counts(); n.Create < int64(len(ex.Created)) || n.Create > int64(len(ex.Created))+4 || n.Update != 0 {
		t.Errorf("Sytex requests %+v; want %d creates (plus at most 4 cut short by the kill) and no update", n, len(ex.Created))
	}
}

// Scenario 2: the producer is killed (SIGKILL) after publishing part of a
// run; a rerun completes it without storing any box twice, and Sytex gets
// one create per box.
func TestProducerKilledMidRunThenRerun(t *testing.T) {
	ctx := testCtx(t, 120*time.Second)
	env := start(t)
	defer env.Close()
	ex := scenario.Seed(env.OZmap, env.Sytex, newBoxes(1000), 12)
	eligible := len(ex.Want)
	env.OZmap.SetLatency(400 * time.Millisecond) // 10 pages of 100: a few seconds

	killCtx, kill := context.WithCancel(ctx) // cancelling it sends SIGKILL
	done := make(chan error, 1)
	go func() {
		_, err := env.Produce(killCtx)
		done <- err
	}()
	waitFor(t, ctx, "the producer to publish some boxes", func() bool {
		return streamState(t, ctx, env, natsx.WorkStream).Msgs >= 150
	})
	kill()
	if err := <-done; err == nil {
		t.Fatalf("producer -once finished before it was killed; make OZmap slower")
	}
	stored := streamState(t, ctx, env, natsx.WorkStream).Msgs
	t.Logf("producer killed after %d of %d boxes were stored", stored, eligible)
	if stored == 0 || stored >= uint64(eligible) {
		t.Fatalf("the kill did not land mid-run: %d of %d boxes stored", stored, eligible)
	}
	if keys := runKeys(t, ctx, env); len(keys) != 0 {
		t.Errorf("a killed run left reports %v; it must leave none", keys)
	}

	env.OZmap.SetLatency(0)
	out := produce(t, ctx, env)
	if n := publishedCount(t, out); n != eligible-int(stored) {
		t.Errorf("rerun published %d, want the %d boxes the killed run had not stored: %s", n, eligible-int(stored), out)
	}
	if want := fmt.Sprintf(" %d already queued unchanged", stored); !strings.Contains(out, want) {
		t.Errorf("rerun output does not say%s: %q", want, out)
	}
	checkEachBoxOnce(t, ctx, env, eligible)

	env.Sytex.ResetCounts()
	drain(t, ctx, env, 2)
	checkSytex(t, ex, env.Sytex)
	checkElementCount(t, ex, env)
	checkNoDeadLetters(t, ctx, env)
	if n := env.Sytex.Counts(); n.Create != int64(eligible) || n.Update != 0 {
		t.Errorf("Sytex requests %+v; want exactly %d creates and no update", n, eligible)
	}
}

// Scenario 3: SIGTERM to a consumer holding upserts in flight. It stops
// pulling, finishes them (or hands them back when CONSUMER_SHUTDOWN_TIMEOUT
// runs out), exits 0, and another consumer does the rest.
func TestConsumerSIGTERMWithInFlightUpserts(t *testing.T) {
	const boxes, concurrency = 40, 4
	setup := func(t *testing.T, shutdownTimeout string) (context.Context, *rehearsal.Env, scenario.Expect) {
		ctx := testCtx(t, 120*time.Second)
		env := start(t)
		t.Cleanup(env.Close)
		env.Extra["CONSUMER_CONCURRENCY"] = fmt.Sprint(concurrency)
		env.Extra["CONSUMER_SHUTDOWN_TIMEOUT"] = shutdownTimeout
		env.Extra["CONSUMER_ACK_WAIT"] = "2m"
		ex := scenario.Seed(env.OZmap, env.Sytex, newBoxes(boxes*10/9), 13)
		if len(ex.Created) != boxes {
			t.Fatalf("mix has %d new boxes, want %d", len(ex.Created), boxes)
		}
		produce(t, ctx, env)
		return ctx, env, ex
	}
	// holding waits until every worker of the consumer is inside an upsert
	// (its search reached Sytex).
	holding := func(t *testing.T, ctx context.Context, env *rehearsal.Env) {
		waitFor(t, ctx, "the consumer to hold a box in every worker", func() bool {
			return env.Sytex.Counts().Search >= concurrency
		})
	}
	// finishWithin starts another consumer and requires it to drain the
	// backlog well within CONSUMER_ACK_WAIT (set to 2 minutes): a box the
	// stopped consumer left unacked instead of handing it back would only
	// come back after the ack wait.
	finishWithin := func(t *testing.T, ctx context.Context, env *rehearsal.Env) {
		b := startConsumers(t, ctx, env, 1)[0]
		bctx, cancel := context.WithTimeout(ctx, 45*time.Second)
		defer cancel()
		if err := env.WaitIdle(bctx); err != nil {
			t.Fatalf("the other consumer did not finish the boxes within 45s (ack wait 2m): not handed back? %v\nlogs:\n%s", err, env.Logs())
		}
		stopAll(t, b)
	}

	t.Run("finishes in-flight upserts", func(t *testing.T) {
		ctx, env, ex := setup(t, "30s")
		env.Sytex.SetLatency(time.Second) // a search and a create: 2 s a box
		a := startConsumers(t, ctx, env, 1)[0]
		holding(t, ctx, env)
		began := time.Now()
		if err := a.Stop(60 * time.Second); err != nil {
			t.Fatalf("consumer did not exit 0 on SIGTERM: %v\n%s", err, a.Logs())
		}
		t.Logf("consumer exited 0 %s after SIGTERM", time.Since(began).Round(time.Millisecond))
		if strings.Contains(a.Logs(), "shutdown timeout reached") {
			t.Errorf("consumer hit its 30s shutdown timeout with 2s upserts:\n%s", a.Logs())
		}
		// What it held it finished: acked, nothing left unacked.
		if n := consumerInfo(t, ctx, env).NumAckPending; n != 0 {
			t.Errorf("%d boxes unacked after the consumer finished its in-flight upserts", n)
		}
		done := len(env.Sytex.Elements())
		if done < concurrency || done >= boxes {
			t.Errorf("after SIGTERM Sytex holds %d elements; want the %d in flight finished and the rest left", done, concurrency)
		}
		env.Sytex.SetLatency(0)
		finishWithin(t, ctx, env)
		checkSytex(t, ex, env.Sytex)
		checkElementCount(t, ex, env)
		checkNoDeadLetters(t, ctx, env)
		if n := env.Sytex.Counts(); n.Create != boxes {
			t.Errorf("Sytex creates: %d, want %d (one per box)", n.Create, boxes)
		}
	})

	t.Run("hands back at the shutdown timeout", func(t *testing.T) {
		ctx, env, ex := setup(t, "2s")
		env.Sytex.SetHang(true) // upserts never finish by themselves
		a := startConsumers(t, ctx, env, 1)[0]
		holding(t, ctx, env)
		began := time.Now()
		if err := a.Stop(60 * time.Second); err != nil {
			t.Fatalf("consumer did not exit 0 on SIGTERM: %v\n%s", err, a.Logs())
		}
		t.Logf("consumer exited 0 %s after SIGTERM", time.Since(began).Round(time.Millisecond))
		if !strings.Contains(a.Logs(), "shutdown timeout reached") {
			t.Errorf("consumer logs do not say the shutdown timeout was reached:\n%s", a.Logs())
		}
		if n := len(env.Sytex.Elements()); n != 0 {
			t.Errorf("Sytex holds %d elements while it hung", n)
		}
		env.Sytex.SetHang(false)
		finishWithin(t, ctx, env)
		checkSytex(t, ex, env.Sytex)
		checkElementCount(t, ex, env)
		checkNoDeadLetters(t, ctx, env)
		if n := env.Sytex.Counts(); n.Create != boxes {
			t.Errorf("Sytex creates: %d, want %d (one per box)", n.Create, boxes)
		}
	})
}

// Scenario 4: three producer daemons share one schedule; the scheduled sync
// runs once, not once per replica. SYNC_SCHEDULE has minute resolution, so
// this waits for the next minute.
func TestScheduledSyncRunsOnceAcrossReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("waits up to a minute for the schedule to fire")
	}
	ctx := testCtx(t, 150*time.Second)
	env := start(t)
	defer env.Close()
	ex := scenario.Seed(env.OZmap, env.Sytex, newBoxes(100), 14)
	now := time.Now().UTC()
	at := now.Truncate(time.Minute).Add(time.Minute)
	if at.Sub(now) < 10*time.Second { // leave time to start three daemons
		at = at.Add(time.Minute)
	}
	runID := syncrun.RunIDFor(at)
	env.Extra["SYNC_SCHEDULE"] = dailyAt(at)
	env.Extra["SYNC_TIMEZONE"] = "UTC"
	// A replica that a loaded machine starts after the minute catches the
	// same run up: still one run. (The previous one is a day old.)
	env.Extra["SYNC_CATCHUP"] = "1h"

	var ps []*rehearsal.Process
	for i := 0; i < 3; i++ {
		ps = append(ps, startProducer(t, ctx, env))
	}
	t.Logf("three daemons waiting for %s (run %s)", at.Format(time.TimeOnly), runID)
	waitFor(t, ctx, "the run report of "+runID, func() bool {
		_, ok := runReport(ctx, env, runID)
		return ok
	})
	// Every replica has taken its decision about this run: ran it, is
	// watching the holder, or found it done.
	waitFor(t, ctx, "every replica to settle run "+runID, func() bool {
		for _, p := range ps {
			l := p.Logs()
			if logCount(l, "sync finished", runID)+logCount(l, "another producer replica holds the sync; watching it", runID)+
				logCount(l, "scheduled sync already ran", runID) == 0 {
				return false
			}
		}
		return true
	})
	stopAll(t, ps...)

	started := 0
	for _, p := range ps {
		started += logCount(p.Logs(), "sync started", runID)
	}
	if started != 1 {
		t.Errorf("%d replicas started scheduled run %s, want 1:\n%s", started, runID, env.Logs())
	}
	rep, _ := runReport(ctx, env, runID)
	if rep.Err != "" || rep.Published != len(ex.Want) {
		t.Errorf("run report %+v; want %d published, no error", rep, len(ex.Want))
	}
	if keys := runKeys(t, ctx, env); len(keys) != 1 {
		t.Errorf("run reports %v, want only run.%s", keys, runID)
	}
	checkEachBoxOnce(t, ctx, env, len(ex.Want))
}

// Scenario 5: a producer daemon started after the scheduled time, within
// SYNC_CATCHUP, runs the missed sync at once (two replicas start together:
// still one run); a replica started after it ran does not run it again.
func TestCatchUpRunsMissedSyncAtStart(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	env := start(t)
	defer env.Close()
	ex := scenario.Seed(env.OZmap, env.Sytex, newBoxes(100), 15)
	at := time.Now().UTC().Truncate(time.Minute).Add(-3 * time.Minute)
	runID := syncrun.RunIDFor(at)
	env.Extra["SYNC_SCHEDULE"] = dailyAt(at)
	env.Extra["SYNC_TIMEZONE"] = "UTC"
	env.Extra["SYNC_CATCHUP"] = "6h"

	ps := make([]*rehearsal.Process, 2)
	var wg sync.WaitGroup
	for i := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := env.StartProducer(ctx)
			if err != nil {
				t.Errorf("start producer daemon: %v", err)
				return
			}
			ps[i] = p
		}()
	}
	wg.Wait()
	for _, p := range ps {
		if p == nil {
			t.FailNow()
		}
		t.Cleanup(func() {
			if p.Running() {
				p.Kill()
			}
		})
	}
	waitFor(t, ctx, "the catch-up run's report "+runID, func() bool {
		_, ok := runReport(ctx, env, runID)
		return ok
	})
	waitFor(t, ctx, "both replicas to settle run "+runID, func() bool {
		for _, p := range ps {
			l := p.Logs()
			if logCount(l, "sync finished", runID)+logCount(l, "another producer replica holds the sync; watching it", runID)+
				logCount(l, "scheduled sync already ran", runID) == 0 {
				return false
			}
		}
		return true
	})
	if !strings.Contains(env.Logs(), "catching up a scheduled sync") {
		t.Errorf("no replica logged the catch-up")
	}

	// Started after the run: finds the report and does nothing.
	late := startProducer(t, ctx, env)
	waitFor(t, ctx, "the late replica to find run "+runID+" done", func() bool {
		return logCount(late.Logs(), "scheduled sync already ran", runID) == 1
	})
	stopAll(t, append(ps, late)...)

	started := 0
	for _, p := range append(ps, late) {
		started += logCount(p.Logs(), "sync started", runID)
	}
	if started != 1 {
		t.Errorf("missed run %s was started %d times, want 1:\n%s", runID, started, env.Logs())
	}
	rep, _ := runReport(ctx, env, runID)
	if rep.Err != "" || rep.Published != len(ex.Want) {
		t.Errorf("run report %+v; want %d published, no error", rep, len(ex.Want))
	}
	checkEachBoxOnce(t, ctx, env, len(ex.Want))
}

// Scenario 6: NATS restarts (same port, same store) while the producer
// daemon and two consumers run and a backlog is being drained. They
// reconnect by themselves; a sync after the restart publishes only what
// changed (the dedup state survived) and the consumers finish everything.
func TestNATSRestartProgramsCarryOn(t *testing.T) {
	ctx := testCtx(t, 120*time.Second)
	env := start(t)
	defer env.Close()
	env.Extra["CONSUMER_ACK_WAIT"] = "5s" // acks lost in the outage come back soon
	env.Extra["SYTEX_TIMEOUT"] = "2s"
	env.Extra["SYNC_SCHEDULE"] = "0 3 1 1 *" // the daemon only has to stay up
	env.Extra["SYNC_CATCHUP"] = "0"
	ex := scenario.Seed(env.OZmap, env.Sytex, newBoxes(300), 16)
	produce(t, ctx, env)
	env.Sytex.SetLatency(20 * time.Millisecond)

	p := startProducer(t, ctx, env)
	cs := startConsumers(t, ctx, env, 2)
	waitFor(t, ctx, "a quarter of the boxes in Sytex", func() bool {
		return env.Sytex.Counts().Create >= int64(len(ex.Created)/4)
	})
	if err := env.RestartNATS(time.Second); err != nil {
		t.Fatal(err)
	}
	for i, proc := range append([]*rehearsal.Process{p}, cs...) {
		waitFor(t, ctx, fmt.Sprintf("process %d to reconnect", i+1), func() bool {
			return strings.Contains(proc.Logs(), "nats reconnected")
		})
	}

	// OZmap changes after the restart: 10 boxes move, 10 are new.
	moved := 0
	for _, b := range env.OZmap.Boxes() {
		if moved == 10 || !ex.Eligible[b.ID] {
			continue
		}
		moved++
		lng, lat := b.Coords[0]+0.001, b.Coords[1]-0.001
		b.Coords, b.Lat, b.Lng = []float64{lng, lat}, lat, lng
		b.UpdatedAt = b.UpdatedAt.Add(time.Hour)
		env.OZmap.PutBox(b)
		w := ex.Want[b.Name]
		w.Latitude, w.Longitude = math.Round(lat*1e6)/1e6, math.Round(lng*1e6)/1e6
		ex.Want[b.Name] = w
	}
	for i := 0; i < 10; i++ {
		b := ozmaptest.Box{Name: fmt.Sprintf("CTO-AFTER-RESTART-%02d", i), Coords: []float64{-48.5 - float64(i)/1000, -27.6},
			Implanted: true, BoxType: ozmaptest.DefaultBoxTypes()[0].ID}
		env.OZmap.PutBox(b)
		ex.Want[b.Name] = sytexElement(b, 321)
	}
	out := produce(t, ctx, env)
	if n := publishedCount(t, out); n != 20 {
		t.Errorf("sync after the restart published %d, want 20 (10 moved, 10 new; the rest unchanged): %s", n, out)
	}
	waitIdle(t, ctx, env)
	if !p.Running() {
		t.Errorf("producer daemon exited after the NATS restart:\n%s", p.Logs())
	}
	stopAll(t, append(cs, p)...)

	checkSytex(t, ex, env.Sytex)
	checkElementCount(t, ex, env)
	checkNoDeadLetters(t, ctx, env)
	checkEachBoxOnceOrChanged(t, ctx, env, len(ex.Want), 10)
}

// checkEachBoxOnceOrChanged is checkEachBoxOnce for a stream where changed
// boxes were published a second time (their new version replaced the old).
func checkEachBoxOnceOrChanged(t *testing.T, ctx context.Context, env *rehearsal.Env, boxes, changed int) {
	t.Helper()
	st := streamState(t, ctx, env, natsx.WorkStream)
	if st.Msgs != uint64(boxes) || st.LastSeq != uint64(boxes+changed) {
		t.Errorf("%s holds %d messages (last sequence %d); want %d boxes with %d republished (last sequence %d)",
			natsx.WorkStream, st.Msgs, st.LastSeq, boxes, changed, boxes+changed)
	}
}
