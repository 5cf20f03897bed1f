// Package worker runs the consumer's pull loop: it takes box messages from
// the durable consumer sytex-upsert, upserts each through the circuit
// breaker, and acks, retries or dead-letters it. The upsert itself is
// package upsert; each concern here wraps around it.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sony/gobreaker/v2"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/consumer/upsert"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/box"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/deadletter"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/sytex"
)

// Event is what happened to one message, for metrics and reports.
type Event struct {
	Box      box.Box // zero when the message did not decode
	Result   upsert.Result
	Err      error
	Kind     deadletter.Kind // set when dead-lettered
	Reason   string          // the dead letter's reason
	Retried  bool            // handed back for a later attempt
	Attempts int             // real attempts made, this one included
	// StreamSeq is the message's sequence on the work stream (retried
	// events): with the box id, what PriorAttempts is asked about.
	StreamSeq uint64
}

// Options configure a Worker.
type Options struct {
	Concurrency     int
	MaxAttempts     int           // real attempts before a transiently failing box is dead-lettered
	RetryBase       time.Duration // first retry delay; doubles per attempt, with jitter
	RetryMax        time.Duration
	AckWait         time.Duration // the consumer's AckWait; long upserts send InProgress well within it
	ShutdownTimeout time.Duration // how long in-flight upserts may finish after a stop
	Breaker         BreakerSettings
	// PauseReplicas pauses the durable consumer for every replica while the
	// breaker is open (JetStream consumer pause), so no replica keeps
	// pulling work it cannot do.
	PauseReplicas bool
	OnEvent       func(Event)
	Log           *slog.Logger
	// OnHold, when set, is told when a worker starts (+1) and stops (-1)
	// holding a box it cannot work on yet, and why (HoldBreaker,
	// HoldRateLimited, HoldUnchecked): a gauge of held boxes.
	OnHold func(reason string, delta int)
	// PriorAttempts, when set, says how many failed attempts the message
	// (box id, stream sequence) already had, as recorded in the box's status
	// from Event.Attempts of retried events. Deliveries that were no attempt
	// (a box handed back untried at a consumer's shutdown) then do not count
	// towards MaxAttempts. ok is false when it cannot tell: JetStream's
	// delivery count is used then.
	PriorAttempts func(ctx context.Context, boxID string, streamSeq uint64) (n int, ok bool)
}

// Worker is one consumer process's pull loop.
type Worker struct {
	js   jetstream.JetStream
	cons jetstream.Consumer
	up   *upsert.Upserter
	opt  Options
	log  *slog.Logger
	cb   *gobreaker.CircuitBreaker[any]
	// breakerChanged is closed and replaced on every breaker transition, so
	// workers holding a box while it is open wake as soon as it half-opens.
	mu             sync.Mutex
	breakerChanged chan struct{}
	dlq            *dlqIndex
	stream         jetstream.Stream // the work stream, for the superseded check
}

// New builds a Worker. api is the Sytex client; the Worker wraps it in the
// breaker and rate gate and hands the wrapped client to the upserter.
func New(js jetstream.JetStream, cons jetstream.Consumer, api upsert.Sytex, up upsert.Upserter, o Options) *Worker {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	w := &Worker{js: js, cons: cons, opt: o, log: o.Log, breakerChanged: make(chan struct{}), dlq: &dlqIndex{js: js}}
	bs := o.Breaker
	user := bs.OnStateChange
	bs.OnStateChange = func(from, to gobreaker.State) {
		w.mu.Lock()
		close(w.breakerChanged)
		w.breakerChanged = make(chan struct{})
		w.mu.Unlock()
		if o.PauseReplicas {
			go w.pauseOrResume(to)
		}
		if user != nil {
			user(from, to)
		}
	}
	w.cb = newBreaker(bs, o.Log)
	up.Sytex = &guarded{api: api, cb: w.cb, gate: &rateGate{}}
	w.up = &up
	return w
}

// BreakerState is the breaker's current state.
func (w *Worker) BreakerState() gobreaker.State { return w.cb.State() }

func (w *Worker) pauseOrResume(to gobreaker.State) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	switch to {
	case gobreaker.StateOpen:
		until := time.Now().Add(w.opt.Breaker.OpenTimeout)
		if _, err := w.js.PauseConsumer(ctx, natsx.WorkStream, natsx.UpsertConsumer, until); err != nil {
			w.log.Warn("could not pause the consumer for the other replicas", "err", err)
			return
		}
		w.log.Warn("Sytex is failing: paused consumer "+natsx.UpsertConsumer+" for every replica", "until", until)
	case gobreaker.StateClosed:
		if _, err := w.js.ResumeConsumer(ctx, natsx.WorkStream, natsx.UpsertConsumer); err != nil {
			w.log.Warn("could not resume the consumer", "err", err)
			return
		}
		w.log.Info("Sytex answers again: resumed consumer " + natsx.UpsertConsumer)
	}
}

// Run pulls and processes boxes until ctx is cancelled, then stops pulling,
// lets in-flight upserts finish (up to ShutdownTimeout), hands back what it
// could not finish, and returns nil.
//
// Each worker pulls one message when it is free, instead of sharing a
// prefetch buffer: a buffered message is already "delivered" and its AckWait
// runs while it waits (nats.go issue 1929). While the workers hold boxes
// through a Sytex outage, a buffer would expire and JetStream would hand the
// same box to another replica to upsert concurrently — two creates, two
// elements. With no buffer, every box this process has is one a worker is
// heartbeating.
func (w *Worker) Run(ctx context.Context) error {
	// Upserts run under work, which outlives ctx by ShutdownTimeout so an
	// upsert in progress at SIGTERM can finish and be acked.
	stream, err := w.js.Stream(ctx, natsx.WorkStream)
	if err != nil {
		return fmt.Errorf("open %s: %w", natsx.WorkStream, err)
	}
	w.stream = stream
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	go w.dlq.run(ctx, 30*time.Second)
	go func() {
		<-ctx.Done()
		t := time.NewTimer(w.opt.ShutdownTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			w.log.Warn("shutdown timeout reached; handing back unfinished boxes")
			cancelWork()
		case <-work.Done():
		}
	}()
	var wg sync.WaitGroup
	for range w.opt.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.pullLoop(ctx, work)
		}()
	}
	wg.Wait()
	cancelWork()
	return nil
}

// pullWait is how long one pull request waits on the server for a message.
// The server expires it, so no message is ever delivered to a worker that
// has stopped listening.
const pullWait = time.Second

func (w *Worker) pullLoop(stop, work context.Context) {
	for stop.Err() == nil {
		m, err := w.cons.Next(jetstream.FetchMaxWait(pullWait))
		if err != nil {
			if !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) && stop.Err() == nil {
				w.log.Warn("pull interrupted; continuing", "err", err)
				select {
				case <-time.After(250*time.Millisecond + jitter(250*time.Millisecond)):
				case <-stop.Done():
				}
			}
			continue
		}
		if stop.Err() != nil {
			// Arrived as we stopped: hand it straight to another replica.
			_ = m.Nak()
			return
		}
		w.handle(stop, work, m)
	}
}

// handle processes one message: decode, upsert (holding the message while
// the breaker is open or a 429 slow-down is in force), then ack, retry or
// dead-letter.
func (w *Worker) handle(stop, work context.Context, m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		w.log.Error("message without JetStream metadata; terminating it", "subject", m.Subject(), "err", err)
		_ = m.TermWithReason("no metadata")
		return
	}
	attempts := int(meta.NumDelivered)
	b, err := box.Decode(m.Data())
	if err != nil {
		w.deadLetter(work, m, meta, box.Box{ID: subjectBoxID(m.Subject())}, deadletter.KindUndecodable, "message is not a valid box message: "+err.Error(), err, attempts)
		return
	}
	if m.Subject() != box.Subject(natsx.WorkSubject, b.ID) {
		w.deadLetter(work, m, meta, b, deadletter.KindUndecodable,
			fmt.Sprintf("message for box %s arrived on subject %s; box messages go on %s", b.ID, m.Subject(), box.Subject(natsx.WorkSubject, b.ID)), nil, attempts)
		return
	}
	// Built only when a line is logged: With costs an allocation per box.
	log := func() *slog.Logger { return w.log.With("run_id", b.RunID, "box_id", b.ID) }

	stopBeat := w.heartbeat(m)
	res, err := w.upsertHolding(stop, work, m, b)
	stopBeat()

	switch {
	case errors.Is(err, errSuperseded):
		// A newer version of the box (or its withdrawal by the producer)
		// is on the stream; that is what Sytex must get, not this one.
		if w.log.Enabled(work, slog.LevelDebug) {
			log().Debug("box superseded on the stream; skipped")
		}
		_ = m.Ack()
	case err == nil:
		// Not waited for (Ack, not DoubleAck): if an ack is lost, JetStream
		// redelivers the box after the ack wait and the next upsert finds it
		// unchanged, so confirming every ack would only hold a worker for
		// one more round trip per box.
		if aerr := m.Ack(); aerr != nil {
			log().Warn("ack failed; the box will be redelivered and found unchanged", "err", aerr)
		}
		if w.log.Enabled(work, slog.LevelDebug) {
			log().Debug("box synced", "outcome", res.Outcome, "sytex_id", res.ElementID)
		}
		if res.Outcome != upsert.WouldCreate && res.Outcome != upsert.WouldUpdate {
			// Sytex now holds the box: an old letter about it is moot. A
			// dry run wrote nothing, so the letter stays.
			w.dlq.clear(work, b.ID)
		}
		w.emit(Event{Box: b, Result: res, Attempts: attempts})
	case errors.As(err, new(permanentError)):
		w.deadLetter(work, m, meta, b, deadletter.KindRejected, "internal error while upserting (a bug: report it with this letter)", err, attempts)
	case errors.Is(err, upsert.ErrUnmappedType):
		w.deadLetter(work, m, meta, b, deadletter.KindUnmappedType, err.Error()+" (map it, then replay the box)", err, attempts)
	case sytex.IsPermanent(err) && !sytex.IsAuth(err):
		w.deadLetter(work, m, meta, b, deadletter.KindRejected, "Sytex rejected the box", err, attempts)
	case work.Err() != nil || stop.Err() != nil && errors.Is(err, context.Canceled):
		// Shutting down: hand it back now for another replica.
		_ = m.Nak()
	default:
		attempts = w.realAttempts(work, b.ID, meta)
		if attempts >= w.opt.MaxAttempts || int(meta.NumDelivered) >= maxDeliveriesFactor*w.opt.MaxAttempts {
			w.deadLetter(work, m, meta, b, deadletter.KindExhausted,
				fmt.Sprintf("Sytex failed %d times (CONSUMER_MAX_ATTEMPTS); replay once Sytex is healthy", attempts), err, attempts)
			return
		}
		d := w.retryDelay(attempts, err)
		log().Warn("upsert failed; will retry", "attempt", attempts, "retry_in", d.String(), "err", err)
		if nerr := m.NakWithDelay(d); nerr != nil {
			log().Warn("nak failed; the box is redelivered after the ack wait", "err", nerr)
		}
		w.emit(Event{Box: b, Err: err, Retried: true, Attempts: attempts, StreamSeq: meta.Sequence.Stream})
	}
}

// maxDeliveriesFactor bounds deliveries when real attempts are counted from
// box statuses: if those are lost, a failing box still ends in the DLQ.
const maxDeliveriesFactor = 3

// realAttempts is this delivery's attempt number, counting only deliveries
// that were attempts: JetStream also counts a box handed back untried at a
// consumer's shutdown. The failed attempts recorded before (PriorAttempts)
// plus this one, never more than JetStream's count.
func (w *Worker) realAttempts(ctx context.Context, boxID string, meta *jetstream.MsgMetadata) int {
	delivered := int(meta.NumDelivered)
	if w.opt.PriorAttempts == nil {
		return delivered
	}
	prior, ok := w.opt.PriorAttempts(ctx, boxID, meta.Sequence.Stream)
	if !ok {
		return delivered
	}
	return min(prior+1, delivered)
}

// upsertHolding runs the upsert, and while the breaker refuses calls (open,
// or half-open with its probe already out) keeps the message in hand instead
// of naking it: naks count as deliveries, and an outage must not burn a box's
// attempts. The heartbeat keeps the message's AckWait from running out.
func (w *Worker) upsertHolding(stop, work context.Context, m jetstream.Msg, b box.Box) (res upsert.Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error upserting box: %v", r)
			w.log.Error("panic in upsert", "box_id", b.ID, "panic", r, "stack", string(debug.Stack()))
			res = upsert.Result{}
			err = permanentError{err}
		}
	}()
	warned := false
	held := "" // why the box is held now, for OnHold
	hold := func(why string) {
		if held == why || w.opt.OnHold == nil {
			held = why
			return
		}
		if held != "" {
			w.opt.OnHold(held, -1)
		}
		if why != "" {
			w.opt.OnHold(why, +1)
		}
		held = why
	}
	defer hold("")
	for {
		w.mu.Lock()
		changed := w.breakerChanged
		w.mu.Unlock()
		res, err = w.up.UpsertChecked(work, b, func(ctx context.Context) error {
			sup, err := w.superseded(ctx, m)
			switch {
			case sup:
				return errSuperseded
			case err != nil:
				return &uncheckedError{err}
			}
			return nil
		})
		if errors.Is(err, errSuperseded) {
			return res, err
		}
		if ue := (*uncheckedError)(nil); errors.As(err, &ue) {
			// The stream could not say whether this is still the box's
			// latest version (a leader election): writing it might put a
			// withdrawn box in Sytex. Keep it in hand and ask again.
			if !warned {
				w.log.Warn("cannot check the box is still current on the stream; holding it until it can", "box_id", b.ID, "err", ue.err)
				warned = true
			}
			hold(HoldUnchecked)
			select {
			case <-stop.Done():
				return res, context.Canceled
			case <-time.After(time.Second + jitter(time.Second)):
			}
			continue
		}
		refused := errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests)
		// A Sytex fault while the breaker is (now) open or half-open is an
		// outage, not this box's problem: a failed probe, or the failure
		// that tripped the breaker. Keep the box instead of naking it, so
		// an outage of any length burns no attempts.
		outage := err != nil && SytexFault(err) && w.cb.State() != gobreaker.StateClosed
		// 429: the rate gate already holds every worker for Retry-After;
		// try again through it rather than spend one of the box's attempts.
		var ae *sytex.APIError
		if errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests && !outage {
			if stop.Err() != nil {
				return res, context.Canceled
			}
			hold(HoldRateLimited)
			continue
		}
		if !refused && !outage {
			return res, err
		}
		hold(HoldBreaker)
		// Wait for the breaker to change state, or for its open period to
		// end (gobreaker moves to half-open lazily, on the next call).
		t := time.NewTimer(min(w.opt.Breaker.OpenTimeout/4+jitter(time.Second), 5*time.Second))
		select {
		case <-stop.Done():
			t.Stop()
			return res, context.Canceled
		case <-changed:
		case <-t.C:
		}
		t.Stop()
		// Half-open: probe Sytex with a harmless search rather than with
		// this box, so a box Sytex fails on (a 500 for its data) is told
		// apart from an outage: once the probe closes the breaker, the
		// box's own failure counts as one of its attempts.
		if w.cb.State() == gobreaker.StateHalfOpen {
			_, _ = w.up.Sytex.FindByName(work, probeName)
		}
	}
}

// Why a worker holds a box (Options.OnHold).
const (
	HoldBreaker     = "breaker-open" // Sytex is failing: waiting for the breaker to close
	HoldRateLimited = "rate-limited" // Sytex answered 429: waiting for Retry-After
	HoldUnchecked   = "unchecked"    // the stream cannot say the box is current
)

// uncheckedError says the superseded check could not be made.
type uncheckedError struct{ err error }

func (e *uncheckedError) Error() string { return "cannot check the box is current: " + e.err.Error() }

// errSuperseded says the message is no longer the box's latest version.
var errSuperseded = errors.New("superseded by a newer version on the stream")

// superseded reports whether the work stream no longer holds this message as
// its box's latest version: the producer published a newer one (the stream
// keeps one message per box) or withdrew the box (a losing duplicate name,
// an invalid row). Writing it would put stale or forbidden data in Sytex,
// possibly concurrently with the newer version.
//
// The fast check is a direct get, which any replica of a clustered stream
// may answer, including a follower that has not stored this message yet: it
// would say "not found". Skipping on that answer would lose the box, so a
// "superseded" answer is confirmed by the stream leader before the box is
// skipped (the rare path). An error means neither could tell.
func (w *Worker) superseded(ctx context.Context, m jetstream.Msg) (bool, error) {
	meta, err := m.Metadata()
	if err != nil || w.stream == nil {
		return false, nil
	}
	ours := meta.Sequence.Stream
	last, err := w.stream.GetLastMsgForSubject(ctx, m.Subject())
	if err == nil && last.Sequence == ours {
		return false, nil
	}
	seq, found, err := w.leaderLastSeq(ctx, m.Subject())
	if err != nil {
		return false, err
	}
	return !found || seq > ours, nil
}

// leaderLastSeq asks the work stream's leader for the sequence of the last
// message on subject.
func (w *Worker) leaderLastSeq(ctx context.Context, subject string) (seq uint64, found bool, err error) {
	m, err := natsx.LeaderGetLast(ctx, w.js.Conn(), natsx.WorkStream, subject)
	if errors.Is(err, natsx.ErrNoMessage) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return m.Sequence, true, nil
}

// probeName is what the half-open probe searches for: any name works, the
// answer only has to be a valid page.
const probeName = "ozmap-sytex-sync-health-probe"

// permanentError marks an internal failure that no retry can cure.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// heartbeat tells JetStream every AckWait/3 that the message is still being
// worked on, until the returned stop is called. A timer, not a goroutine: a
// box upserted within AckWait/3 (nearly all) costs no wake-up at all.
func (w *Worker) heartbeat(m jetstream.Msg) (stop func()) {
	every := w.opt.AckWait / 3
	if every <= 0 {
		every = 10 * time.Second
	}
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	mu.Lock() // t is set before the callback can read it
	defer mu.Unlock()
	t = time.AfterFunc(every, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		_ = m.InProgress()
		t.Reset(every)
	})
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}

// retryDelay grows with the attempt (RetryBase·2^(n-1), capped at RetryMax),
// with ±25% jitter so a burst of failures does not come back as a burst, and
// never shorter than Sytex's Retry-After.
func (w *Worker) retryDelay(attempt int, err error) time.Duration {
	d := w.opt.RetryBase
	for i := 1; i < attempt && d < w.opt.RetryMax; i++ {
		d *= 2
	}
	d = min(d, w.opt.RetryMax)
	d = d*3/4 + jitter(d/2)
	var ae *sytex.APIError
	if errors.As(err, &ae) && ae.RetryAfter > d {
		d = ae.RetryAfter
	}
	return d
}

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d)))
}

// deadLetter stores the box in the DLQ with its reason, then terminates the
// message. If the DLQ cannot be written the message is retried later: a box
// is never acked away without its letter.
func (w *Worker) deadLetter(ctx context.Context, m jetstream.Msg, meta *jetstream.MsgMetadata, b box.Box, kind deadletter.Kind, reason string, cause error, attempts int) {
	l := deadletter.Letter{
		Kind: kind, Source: deadletter.SourceConsumer, Reason: reason,
		Attempts: attempts, Subject: m.Subject(), StreamSeq: meta.Sequence.Stream,
		BoxID: b.ID, BoxName: b.Name, RunID: b.RunID,
	}
	var ae *sytex.APIError
	if errors.As(cause, &ae) {
		l.HTTPStatus = ae.Status
		l.ErrorText = ae.Body
	} else if cause != nil {
		l.ErrorText = cause.Error()
	}
	if err := deadletter.Publish(ctx, w.js, m.Data(), l); err != nil {
		w.log.Error("could not dead-letter the box; will retry it", "box_id", b.ID, "err", err)
		_ = m.NakWithDelay(w.opt.RetryBase)
		return
	}
	if err := m.TermWithReason(string(kind)); err != nil {
		w.log.Warn("terminate after dead-lettering failed (the letter is stored)", "box_id", b.ID, "err", err)
	}
	w.log.Warn("box dead-lettered", "box_id", b.ID, "run_id", b.RunID, "kind", kind, "reason", reason, "error", l.ErrorText)
	w.emit(Event{Box: b, Err: cause, Kind: kind, Reason: reason, Attempts: attempts})
}

func (w *Worker) emit(e Event) {
	if w.opt.OnEvent != nil {
		w.opt.OnEvent(e)
	}
}

// subjectBoxID returns the box id token of a work subject, if it is one.
func subjectBoxID(subject string) string {
	id, ok := strings.CutPrefix(subject, natsx.WorkSubject+".")
	if ok && box.ValidID(id) {
		return id
	}
	return ""
}
