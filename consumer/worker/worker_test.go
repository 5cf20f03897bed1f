package worker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sony/gobreaker/v2"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/consumer/upsert"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/box"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/deadletter"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx/natstest"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/sytex"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/sytex/sytextest"
)

const token, org = "tok-secret", 7

type rig struct {
	js     jetstream.JetStream
	sy     *sytextest.Server
	worker *Worker
	cancel context.CancelFunc
	done   chan error
}

func newRig(t *testing.T, opt Options, before ...func(jetstream.JetStream)) *rig {
	t.Helper()
	topo := natsx.DefaultTopology()
	topo.AckWait = 5 * time.Second
	js := natstest.Start(t, topo)
	for _, f := range before {
		f(js)
	}
	sy := sytextest.NewServer(token, org)
	t.Cleanup(sy.Close)
	api, err := sytex.New(sytex.Options{BaseURL: sy.URL, Token: token, OrganizationID: org, HTTPClient: &http.Client{Timeout: 2 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cons, err := js.Consumer(ctx, natsx.WorkStream, natsx.UpsertConsumer)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Concurrency: 4, MaxAttempts: 3, RetryBase: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond,
		AckWait: topo.AckWait, ShutdownTimeout: 2 * time.Second, PauseReplicas: true,
		Breaker: BreakerSettings{Failures: 3, OpenTimeout: 300 * time.Millisecond},
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil))}
	if opt.MaxAttempts != 0 {
		o.MaxAttempts = opt.MaxAttempts
	}
	o.OnEvent = opt.OnEvent
	o.PriorAttempts = opt.PriorAttempts
	o.OnHold = opt.OnHold
	w := New(js, cons, api, upsert.Upserter{NETypes: map[string]int64{"CTO": 321}}, o)
	rctx, cancel := context.WithCancel(ctx)
	r := &rig{js: js, sy: sy, worker: w, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.Run(rctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *rig) stop(t *testing.T) {
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("worker Run: %v", err)
		}
		r.done <- nil
	case <-time.After(10 * time.Second):
		t.Error("worker did not stop within 10s")
	}
}

func publish(t *testing.T, js jetstream.JetStream, subject string, data []byte) {
	t.Helper()
	if _, err := js.Publish(context.Background(), subject, data); err != nil {
		t.Fatal(err)
	}
}

func testBox(i int, name string) box.Box {
	return box.Box{Schema: box.SchemaVersion, ID: fmt.Sprintf("%024x", i+1), Name: name, TypeCode: "CTO",
		Latitude: -27.5 - float64(i)/1000, Longitude: -48.5, UpdatedAt: time.Now().UTC(), RunID: "r1"}
}

func publishBox(t *testing.T, js jetstream.JetStream, b box.Box) {
	data, err := b.Encode()
	if err != nil {
		t.Fatal(err)
	}
	publish(t, js, box.Subject(natsx.WorkSubject, b.ID), data)
}

// idle waits until the consumer has nothing pending or unacked.
func idle(t *testing.T, js jetstream.JetStream, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		c, err := js.Consumer(ctx, natsx.WorkStream, natsx.UpsertConsumer)
		if err == nil {
			if info, err := c.Info(ctx); err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("consumer not idle within %s", within)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func letters(t *testing.T, js jetstream.JetStream) []deadletter.Letter {
	t.Helper()
	var out []deadletter.Letter
	if err := deadletter.Scan(context.Background(), js, func(_ uint64, l deadletter.Letter, _ []byte) bool {
		out = append(out, l)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRejectedBoxIsDeadLetteredWhileOthersSync(t *testing.T) {
	r := newRig(t, Options{})
	r.sy.FailMatching(func(req *http.Request) (int, string, bool) {
		if req.Method == http.MethodPost {
			body, _ := io.ReadAll(req.Body)
			if string(body) != "" && contains(string(body), "BAD-1") {
				return 400, `{"ne_type": ["Invalid pk \"999\" - object does not exist."]}`, true
			}
		}
		return 0, "", false
	})
	for i, name := range []string{"CTO-1", "BAD-1", "CTO-2"} {
		publishBox(t, r.js, testBox(i, name))
	}
	idle(t, r.js, 15*time.Second)
	if n := len(r.sy.ElementsByName("CTO-1")) + len(r.sy.ElementsByName("CTO-2")); n != 2 {
		t.Fatalf("good boxes in Sytex: %d, want 2", n)
	}
	if n := len(r.sy.ElementsByName("BAD-1")); n != 0 {
		t.Fatalf("rejected box in Sytex: %d", n)
	}
	ls := letters(t, r.js)
	if len(ls) != 1 {
		t.Fatalf("dead letters: %+v, want 1", ls)
	}
	l := ls[0]
	if l.Kind != deadletter.KindRejected || l.HTTPStatus != 400 || !contains(l.ErrorText, "Invalid pk") || l.BoxName != "BAD-1" ||
		l.StreamSeq == 0 || l.Subject == "" || l.Attempts != 1 {
		t.Fatalf("letter = %+v", l)
	}
	if r.worker.BreakerState() != gobreaker.StateClosed {
		t.Fatalf("a 400 tripped the breaker: %v", r.worker.BreakerState())
	}
}

func TestGarbageOnTheSubjectIsDeadLettered(t *testing.T) {
	r := newRig(t, Options{})
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = 'x'
	}
	publish(t, r.js, natsx.WorkSubject+".000000000000000000000001", []byte("not json"))
	publish(t, r.js, natsx.WorkSubject+".000000000000000000000002", []byte(`{"schema": 99, "id": "000000000000000000000002", "name": "X", "latitude": 1, "longitude": 1}`))
	publish(t, r.js, natsx.WorkSubject+".000000000000000000000003", []byte(`{"schema": 1}`))
	publish(t, r.js, natsx.WorkSubject+".hand.typed", big)
	publishBox(t, r.js, testBox(9, "CTO-OK"))
	idle(t, r.js, 15*time.Second)
	ls := letters(t, r.js)
	if len(ls) != 4 {
		t.Fatalf("dead letters: %d, want 4: %+v", len(ls), ls)
	}
	for _, l := range ls {
		if l.Kind != deadletter.KindUndecodable || l.Reason == "" {
			t.Errorf("letter %+v: want kind undecodable with a reason", l)
		}
	}
	if len(r.sy.ElementsByName("CTO-OK")) != 1 {
		t.Fatal("the valid box after the garbage was not synced: the consumer stopped?")
	}
}

func TestOutageNeverDeadLettersAndDrainsAfterwards(t *testing.T) {
	var held, maxHeld atomic.Int32 // what ozmap_sync_boxes_held{reason="breaker-open"} shows
	r := newRig(t, Options{MaxAttempts: 3, OnHold: func(reason string, d int) {
		if reason == HoldBreaker {
			if n := held.Add(int32(d)); n > maxHeld.Load() {
				maxHeld.Store(n)
			}
		}
	}})
	r.sy.SetOutage(true)
	for i := range 20 {
		publishBox(t, r.js, testBox(i, fmt.Sprintf("CTO-%02d", i)))
	}
	// Much longer than MaxAttempts × retry delays: a naive nak loop would
	// have dead-lettered every box by now.
	deadline := time.Now().Add(3 * time.Second)
	sawPause := false
	for time.Now().Before(deadline) {
		c, _ := r.js.Consumer(context.Background(), natsx.WorkStream, natsx.UpsertConsumer)
		if info, err := c.Info(context.Background()); err == nil && info.Paused {
			sawPause = true
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := len(letters(t, r.js)); n != 0 {
		t.Fatalf("%d boxes dead-lettered during a Sytex outage", n)
	}
	if !sawPause {
		t.Error("the consumer was never paused for the other replicas while the breaker was open")
	}
	requests := r.sy.Counts().Total
	if requests > 60 {
		t.Errorf("%d requests to Sytex during a 3s outage; the breaker should keep it to a few probes", requests)
	}
	r.sy.SetOutage(false)
	idle(t, r.js, 20*time.Second)
	if n := len(r.sy.Elements()); n != 20 {
		t.Fatalf("after the outage Sytex has %d elements, want 20", n)
	}
	if n := len(letters(t, r.js)); n != 0 {
		t.Fatalf("%d dead letters after the outage", n)
	}
	if maxHeld.Load() == 0 || held.Load() != 0 {
		t.Errorf("boxes held for the breaker: at most %d during the outage (want > 0), %d after (want 0)", maxHeld.Load(), held.Load())
	}
}

func TestTransientFailureRetriedThenDeadLetteredAfterMaxAttempts(t *testing.T) {
	r := newRig(t, Options{MaxAttempts: 3})
	// A 500 for one box only, forever: the breaker must not open (other
	// boxes succeed) and the box must end in the DLQ after 3 attempts.
	r.sy.FailMatching(func(req *http.Request) (int, string, bool) {
		if contains(req.URL.RawQuery, "FLAKY") {
			return 500, `{"detail": "boom"}`, true
		}
		return 0, "", false
	})
	publishBox(t, r.js, testBox(1, "FLAKY"))
	for i := 2; i < 6; i++ {
		publishBox(t, r.js, testBox(i, fmt.Sprintf("CTO-%d", i)))
	}
	idle(t, r.js, 20*time.Second)
	ls := letters(t, r.js)
	if len(ls) != 1 || ls[0].Kind != deadletter.KindExhausted || ls[0].Attempts != 3 || ls[0].HTTPStatus != 500 {
		t.Fatalf("letters = %+v; want one max-attempts letter after 3 attempts with status 500", ls)
	}
	if len(r.sy.Elements()) != 4 {
		t.Fatalf("Sytex elements = %d, want 4", len(r.sy.Elements()))
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestSuccessClearsTheBoxsStaleDeadLetter(t *testing.T) {
	r := newRig(t, Options{})
	b := testBox(1, "CTO-FIXED")
	body, _ := b.Encode()
	// A letter from an earlier failure of this box.
	if err := deadletter.Publish(context.Background(), r.js, body, deadletter.Letter{Kind: deadletter.KindRejected, Source: deadletter.SourceConsumer, BoxID: b.ID, Reason: "old"}); err != nil {
		t.Fatal(err)
	}
	r.worker.dlq.refresh(context.Background())
	publishBox(t, r.js, b)
	idle(t, r.js, 10*time.Second)
	if len(r.sy.ElementsByName("CTO-FIXED")) != 1 {
		t.Fatal("box not synced")
	}
	if ls := letters(t, r.js); len(ls) != 0 {
		t.Fatalf("stale letter still in the DLQ after the box synced: %+v", ls)
	}
}

func TestRateLimitedRunCompletesWithoutDeadLetters(t *testing.T) {
	r := newRig(t, Options{MaxAttempts: 2})
	r.sy.FailNext(http.StatusTooManyRequests, 6) // Retry-After: 1
	for i := range 5 {
		publishBox(t, r.js, testBox(i, fmt.Sprintf("CTO-RL-%d", i)))
	}
	idle(t, r.js, 20*time.Second)
	if n := len(letters(t, r.js)); n != 0 {
		t.Fatalf("%d dead letters after a 429 burst", n)
	}
	if n := len(r.sy.Elements()); n != 5 {
		t.Fatalf("Sytex has %d elements, want 5", n)
	}
}

func TestOlderVersionHeldThroughAnOutageIsNotWritten(t *testing.T) {
	r := newRig(t, Options{})
	r.sy.SetOutage(true)
	v1 := testBox(1, "CTO-V")
	publishBox(t, r.js, v1)
	// Wait until the outage opened the breaker: v1 is now held in a
	// worker's hand, not waiting on a nak delay.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if r.worker.BreakerState() == gobreaker.StateOpen {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("v1 never delivered")
		case <-time.After(20 * time.Millisecond):
		}
	}
	v2 := v1
	v2.Latitude, v2.UpdatedAt = -20.123456, v1.UpdatedAt.Add(time.Minute)
	publishBox(t, r.js, v2)
	time.Sleep(500 * time.Millisecond)
	r.sy.SetOutage(false)
	idle(t, r.js, 20*time.Second)
	got := r.sy.ElementsByName("CTO-V")
	if len(got) != 1 || got[0].Latitude != -20.123456 {
		t.Fatalf("Sytex has %+v; want exactly one element with v2's latitude", got)
	}
	if c := r.sy.Counts(); c.Create != 1 || c.Update != 0 {
		t.Fatalf("Sytex writes %+v; want one create of v2 only", c)
	}
}

// The leader check that confirms a "superseded" answer before a box is
// skipped: the latest sequence of a subject, or not found once purged.
func TestLeaderLastSeq(t *testing.T) {
	r := newRig(t, Options{}) // the worker syncs the box meanwhile; the stream keeps it
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := testBox(1, "CTO-1")
	subj := box.Subject(natsx.WorkSubject, b.ID)
	publishBox(t, r.js, b)
	b.Latitude = -27.9
	publishBox(t, r.js, b)
	seq, found, err := r.worker.leaderLastSeq(ctx, subj)
	if err != nil || !found || seq != 2 {
		t.Fatalf("leaderLastSeq = %d, %v, %v; want 2, found", seq, found, err)
	}
	s, err := r.js.Stream(ctx, natsx.WorkStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
		t.Fatal(err)
	}
	if _, found, err := r.worker.leaderLastSeq(ctx, subj); err != nil || found {
		t.Fatalf("after purge: found %v, err %v", found, err)
	}
}

// A box held longer than the ack wait is not handed to anyone else while
// the heartbeat runs, and is once it stops.
func TestHeartbeatKeepsTheBox(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.Start(t, natsx.DefaultTopology())
	publishBox(t, js, testBox(1, "CTO-1"))
	cons, err := js.CreateOrUpdateConsumer(ctx, natsx.WorkStream, jetstream.ConsumerConfig{
		Durable: "hb", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 2 * time.Second, MaxDeliver: -1})
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	w := &Worker{opt: Options{AckWait: 2 * time.Second}}
	stop := w.heartbeat(m)
	if again, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second)); err == nil {
		t.Fatalf("redelivered while heartbeating: %s", again.Subject())
	}
	stop()
	again, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatalf("not redelivered after the heartbeat stopped: %v", err)
	}
	_ = again.Ack()
}

// A producer's letter (a losing duplicate) is not the consumer's to clear:
// an upsert of an older message of that box proves nothing about it.
func TestSuccessLeavesAProducerLetter(t *testing.T) {
	r := newRig(t, Options{})
	b := testBox(1, "CTO-LOSER")
	body, _ := b.Encode()
	if err := deadletter.Publish(context.Background(), r.js, body, deadletter.Letter{Kind: deadletter.KindDuplicateName, Source: deadletter.SourceProducer, BoxID: b.ID, Reason: "name used by another box"}); err != nil {
		t.Fatal(err)
	}
	r.worker.dlq.refresh(context.Background())
	publishBox(t, r.js, b)
	idle(t, r.js, 10*time.Second)
	if ls := letters(t, r.js); len(ls) != 1 || ls[0].Kind != deadletter.KindDuplicateName {
		t.Fatalf("the producer's letter was removed: %+v", ls)
	}
}

// Deliveries that were no attempt (a box handed back untried at a consumer's
// shutdown) do not count towards CONSUMER_MAX_ATTEMPTS when the box's
// earlier failed attempts are known (the consumer reads them from the box
// status).
func TestHandedBackDeliveriesAreNoAttempts(t *testing.T) {
	var mu sync.Mutex
	failed := map[string]Event{} // what the box status would hold
	flaky := testBox(1, "FLAKY")
	handBackTwice := func(js jetstream.JetStream) {
		publishBox(t, js, flaky)
		cons, err := js.Consumer(context.Background(), natsx.WorkStream, natsx.UpsertConsumer)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // two consumers stopping with the box in hand
			m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
			if err != nil {
				t.Fatal(err)
			}
			_ = m.Nak()
		}
	}
	r := newRig(t, Options{MaxAttempts: 3,
		OnEvent: func(e Event) {
			if e.Retried {
				mu.Lock()
				failed[e.Box.ID] = e
				mu.Unlock()
			}
		},
		PriorAttempts: func(_ context.Context, id string, seq uint64) (int, bool) {
			mu.Lock()
			defer mu.Unlock()
			if e, ok := failed[id]; ok && e.StreamSeq == seq {
				return e.Attempts, true
			}
			return 0, true
		}}, handBackTwice)
	var tries atomic.Int32
	r.sy.FailMatching(func(req *http.Request) (int, string, bool) {
		if contains(req.URL.RawQuery, "FLAKY") {
			tries.Add(1)
			return 500, `{"detail": "boom"}`, true
		}
		return 0, "", false
	})
	for i := 2; i < 6; i++ {
		publishBox(t, r.js, testBox(i, fmt.Sprintf("CTO-%d", i)))
	}
	idle(t, r.js, 20*time.Second)
	ls := letters(t, r.js)
	if len(ls) != 1 || ls[0].Kind != deadletter.KindExhausted || ls[0].Attempts != 3 {
		t.Fatalf("letters = %+v; want one max-attempts letter after 3 real attempts", ls)
	}
	if n := tries.Load(); n != 3 {
		t.Fatalf("FLAKY was tried %d times, want 3 (the two hand-backs are no attempts)", n)
	}
}
