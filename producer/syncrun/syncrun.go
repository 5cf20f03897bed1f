// Package syncrun is one sync run of the producer: it pages through OZmap's
// eligible boxes, validates them, picks one winner per name, and publishes
// one JetStream message per box on the work stream. Rows that can never be
// synced are dead-lettered with their reason; nothing is silently dropped.
package syncrun

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/box"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/boxstatus"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/deadletter"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/runreport"
)

// Skip reasons, as they appear in the summary.
const (
	SkipInProject     = "in-project"     // implanted == false (the server filter let it through)
	SkipInvalid       = "invalid"        // dead-lettered: row unreadable or fails validation
	SkipDuplicateName = "duplicate-name" // dead-lettered: another box with the same name won
)

// Source is where boxes come from (the OZmap client, or a test double).
type Source interface {
	BoxTypes(ctx context.Context) (map[string]string, error)
	Boxes(ctx context.Context) iter.Seq2[ozmap.Row, error]
}

// Runner runs syncs.
type Runner struct {
	OZmap Source
	JS    jetstream.JetStream // created with WithPublishAsyncMaxPending
	Log   *slog.Logger
	Now   func() time.Time
	// Status, when set, records each box the producer dead-letters as the
	// box's status.
	Status *boxstatus.Writer
	// Partial says the source returns only part of OZmap (OZMAP_PROJECT_IDS):
	// the run cannot tell that a box of an earlier dead letter is fine now,
	// so it keeps those letters.
	Partial bool
	// ProgressEvery is how often a long run logs its progress (0: 15s).
	ProgressEvery time.Duration
	// Pages, when set, is fed by the OZmap client (ozmap.Options.OnBoxPage)
	// and adds pages read, the total and an ETA to the progress lines.
	Pages *PageProgress
}

// Summary is what one run did: the producer's part of the run report.
type Summary = runreport.Summary

// nameKey is a fixed-size key for a box name. The winner index keeps one
// entry per distinct name, so its size matters at a million boxes: 16 bytes of
// SHA-256 instead of the name itself (a collision is 2^-64-unlikely).
type nameKey [16]byte

// winner is the index's entry for a name: the box that holds it so far. It
// holds no pointer, so the garbage collector never scans the index, and an
// entry (key and value) is 40 bytes.
type winner struct {
	id      packedID
	updated int64 // UnixNano of OZmap updatedAt
}

// packedID is a box id that passed box.ValidID (24 hex digits, either case)
// in 16 bytes: the 12 bytes it spells, then a bit per digit saying it was an
// upper-case letter, so the id comes back exactly as OZmap sent it (its
// subject and its dead letters use it verbatim).
type packedID [16]byte

// packID packs a valid id; ok is false for anything else.
func packID(id string) (p packedID, ok bool) {
	if !box.ValidID(id) {
		return p, false
	}
	for i := 0; i < 24; i++ {
		c := id[i]
		var v byte
		switch {
		case c <= '9':
			v = c - '0'
		case c >= 'a':
			v = c - 'a' + 10
		default:
			v = c - 'A' + 10
			p[12+i/8] |= 1 << (i % 8)
		}
		p[i/2] |= v << (4 * (1 - i%2))
	}
	return p, true
}

func (p packedID) String() string {
	const lower, upper = "0123456789abcdef", "0123456789ABCDEF"
	var b [24]byte
	for i := range b {
		v := p[i/2] >> (4 * (1 - i%2)) & 0xf
		if p[12+i/8]&(1<<(i%8)) != 0 {
			b[i] = upper[v]
		} else {
			b[i] = lower[v]
		}
	}
	return string(b[:])
}

// beatenBy reports whether box (id, updated) wins over w: the latest
// updatedAt, then the highest id (compared as the strings OZmap sent).
func (w winner) beatenBy(id string, updated int64) bool {
	if updated != w.updated {
		return updated > w.updated
	}
	return id > w.id.String()
}

// Run performs one full sync and returns its summary. It returns an error
// (with the partial summary) when the run could not complete: OZmap refused
// the key, stayed unavailable, or JetStream did not acknowledge every box.
func (r *Runner) Run(ctx context.Context, runID string) (Summary, error) {
	now := r.Now
	if now == nil {
		now = time.Now
	}
	log := r.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("run_id", runID)
	s := Summary{RunID: runID, Started: now(), Skipped: map[string]int{}}
	err := r.run(ctx, log, &s)
	s.Finished = now()
	if err != nil {
		s.Err = err.Error()
		return s, fmt.Errorf("sync run %s: %w", runID, err)
	}
	return s, nil
}

func (r *Runner) run(ctx context.Context, log *slog.Logger, s *Summary) error {
	types, err := r.OZmap.BoxTypes(ctx)
	if err != nil {
		return fmt.Errorf("load OZmap box types: %w", err)
	}
	pub := newPublisher(r.JS)
	defer pub.stop()
	if pub.lettered, err = letteredBoxes(ctx, r.JS); err != nil {
		log.Warn("could not list the boxes with dead letters; a withdrawn box that wins again may wait for the next night", "err", err)
	}

	winners := map[nameKey]winner{}
	stopProgress := r.progress(ctx, log, s, pub)
	defer stopProgress()

	for row, err := range r.OZmap.Boxes(ctx) {
		if err != nil {
			return fmt.Errorf("read OZmap boxes: %w", err)
		}
		s.Read++
		if row.Err != nil {
			s.Skipped[SkipInvalid]++
			id, name := row.Box.ID, row.Box.Name
			if id == "" {
				id, name = idAndName(row.Raw)
			}
			if err := r.deadLetterRow(ctx, s.RunID, id, name, row.Raw, row.Err); err != nil {
				return err
			}
			continue
		}
		ob := row.Box
		// The server was asked for implanted boxes only; check again, a
		// filter the server ignores must not send "In project" boxes to Sytex.
		if !ob.Implanted {
			s.Skipped[SkipInProject]++
			continue
		}
		s.Eligible++
		b := box.Box{
			Schema: box.SchemaVersion, ID: ob.ID, Name: ob.Name, TypeCode: ob.TypeCode,
			Latitude: ob.Lat, Longitude: ob.Lng, ProjectID: ob.ProjectID, UpdatedAt: ob.UpdatedAt, RunID: s.RunID,
		}
		if b.TypeCode == "" && ob.TypeID != "" {
			b.TypeCode = types[ob.TypeID]
		}
		verr := b.Validate()
		if !ob.HasCoords {
			verr = errors.Join(errors.New("coordinates: missing (place the box on the map in OZmap)"), verr)
		}
		if verr != nil {
			s.Skipped[SkipInvalid]++
			body, _ := json.Marshal(b)
			if err := r.deadLetterRow(ctx, s.RunID, b.ID, b.Name, body, verr); err != nil {
				return err
			}
			continue
		}

		sum := sha256.Sum256([]byte(b.Name))
		key := nameKey(sum[:16])
		upd := b.UpdatedAt.UnixNano()
		pid, ok := packID(b.ID)
		if !ok { // Validate refused it above; never reached
			return fmt.Errorf("box id %q passed validation but is not 24 hex digits", b.ID)
		}
		w, seen := winners[key]
		switch {
		case !seen:
			winners[key] = winner{id: pid, updated: upd}
			if err := pub.publish(b); err != nil {
				return err
			}
		case !w.beatenBy(b.ID, upd):
			s.Duplicates++
			s.Skipped[SkipDuplicateName]++
			if err := r.deadLetterDuplicate(ctx, b, w.id.String()); err != nil {
				return err
			}
		default:
			// The new box beats one already published. Take the loser off
			// the work stream before it reaches Sytex (if a consumer got it
			// first, the winner's later upsert overwrites it), dead-letter
			// it, and publish the winner.
			s.Duplicates++
			s.Skipped[SkipDuplicateName]++
			if err := r.demote(ctx, pub, w.id.String(), b); err != nil {
				return err
			}
			winners[key] = winner{id: pid, updated: upd}
			if err := pub.publish(b); err != nil {
				return err
			}
		}
	}
	if err := pub.wait(ctx); err != nil {
		return err
	}
	s.Published, s.Unchanged = pub.counts()
	if r.Partial {
		log.Info("keeping earlier producer dead letters: this run saw only some OZmap projects")
	} else {
		n, err := clearStaleProducerLetters(ctx, r.JS, s.RunID, s.Started)
		if err != nil {
			log.Warn("could not clear stale producer dead letters", "err", err)
		}
		s.Cleared = n
	}
	if r.Status != nil {
		if err := r.Status.Flush(ctx); err != nil {
			log.Warn("box statuses of dead-lettered rows not all recorded", "err", err)
		}
	}
	return nil
}

// demote replaces an already published loser by the winner.
func (r *Runner) demote(ctx context.Context, pub *publisher, loserID string, winnerBox box.Box) error {
	if err := pub.wait(ctx); err != nil {
		return err
	}
	stream, err := r.JS.Stream(ctx, natsx.WorkStream)
	if err != nil {
		return fmt.Errorf("demote duplicate %s: %w", loserID, err)
	}
	subj := box.Subject(natsx.WorkSubject, loserID)
	body := []byte(nil)
	if m, err := stream.GetLastMsgForSubject(ctx, subj); err == nil {
		body = m.Data
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
		return fmt.Errorf("take duplicate %s off the work stream: %w", loserID, err)
	}
	l := deadletter.Letter{
		Kind: deadletter.KindDuplicateName, Source: deadletter.SourceProducer,
		Reason: fmt.Sprintf("name %q is also used by OZmap box %s, which was synced instead (latest updatedAt, then highest id wins); rename one of them in OZmap", winnerBox.Name, winnerBox.ID),
		BoxID:  loserID, BoxName: winnerBox.Name, RunID: winnerBox.RunID, WinnerID: winnerBox.ID,
	}
	return r.letter(ctx, body, l)
}

// withdraw takes a box that must not reach Sytex off the work stream: a
// version from an earlier run would otherwise still be there for a replay
// of that run (or for a consumer that has not reached it yet).
func (r *Runner) withdraw(ctx context.Context, id string) error {
	if !box.ValidID(id) {
		return nil
	}
	stream, err := r.JS.Stream(ctx, natsx.WorkStream)
	if err != nil {
		return err
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject(box.Subject(natsx.WorkSubject, id))); err != nil {
		return fmt.Errorf("take box %s off the work stream: %w", id, err)
	}
	return nil
}

func (r *Runner) deadLetterDuplicate(ctx context.Context, b box.Box, winnerID string) error {
	if err := r.withdraw(ctx, b.ID); err != nil {
		return err
	}
	body, _ := b.Encode()
	l := deadletter.Letter{
		Kind: deadletter.KindDuplicateName, Source: deadletter.SourceProducer,
		Reason: fmt.Sprintf("name %q is also used by OZmap box %s, which was synced instead (latest updatedAt, then highest id wins); rename one of them in OZmap", b.Name, winnerID),
		BoxID:  b.ID, BoxName: b.Name, RunID: b.RunID, WinnerID: winnerID,
	}
	return r.letter(ctx, body, l)
}

func (r *Runner) deadLetterRow(ctx context.Context, runID, id, name string, raw []byte, cause error) error {
	if err := r.withdraw(ctx, id); err != nil {
		return err
	}
	l := deadletter.Letter{
		Kind: deadletter.KindInvalidRow, Source: deadletter.SourceProducer,
		Reason: "OZmap row cannot be synced: " + strings.ReplaceAll(cause.Error(), "\n", "; ") + " (fix the box in OZmap; the next sync picks it up)",
		BoxID:  id, BoxName: name, RunID: runID,
	}
	return r.letter(ctx, raw, l)
}

// letter dead-letters a box the producer will not send, and records it as
// the box's status.
func (r *Runner) letter(ctx context.Context, body []byte, l deadletter.Letter) error {
	if err := deadletter.Publish(ctx, r.JS, body, l); err != nil {
		return err
	}
	if r.Status != nil {
		r.Status.Put(boxstatus.Status{BoxID: l.BoxID, Name: l.BoxName, RunID: l.RunID,
			Outcome: boxstatus.Failed, DeadLetter: string(l.Kind), Error: l.Reason})
	}
	return nil
}

// PageProgress counts the OZmap pages a run has read. Its Page method is an
// ozmap.Options.OnBoxPage.
type PageProgress struct {
	mu          sync.Mutex
	pages, rows int
	total       int64 // sum of the totals of the run's queries; -1 unknown
}

// Page records one page of boxes.
func (p *PageProgress) Page(n, rows int, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pages++
	p.rows += rows
	if n == 1 {
		if total < 0 || p.total < 0 {
			p.total = -1
		} else {
			p.total += total
		}
	}
}

func (p *PageProgress) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pages, p.rows, p.total = 0, 0, 0
}

func (p *PageProgress) read() (pages, rows int, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pages, p.rows, p.total
}

// progressLine is one progress log line's attributes: pages and rows read
// out of the total, boxes published, rate, and the time left at that rate.
func progressLine(pages, rows int, total int64, published, unchanged int, elapsed time.Duration) []any {
	rate := 0.0
	if elapsed > 0 {
		rate = float64(rows) / elapsed.Seconds()
	}
	attrs := []any{"pages", pages, "rows_read", rows, "published", published, "unchanged", unchanged,
		"rows_per_second", int(rate)}
	if total > 0 {
		attrs = append(attrs, "total", total, "percent", int(float64(rows)*100/float64(total)))
		if rate > 0 && int64(rows) < total {
			eta := time.Duration(float64(total-int64(rows)) / rate * float64(time.Second))
			attrs = append(attrs, "eta", eta.Round(time.Second).String())
		}
	}
	return attrs
}

func (r *Runner) progress(ctx context.Context, log *slog.Logger, s *Summary, pub *publisher) func() {
	every := r.ProgressEvery
	if every <= 0 {
		every = 15 * time.Second
	}
	pages := r.Pages
	if pages == nil {
		pages = &PageProgress{}
	}
	pages.reset()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				published, unchanged := pub.counts()
				n, rows, total := pages.read()
				log.Info("sync progress", progressLine(n, rows, total, published, unchanged, time.Since(start))...)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// publisher publishes asynchronously with a bounded number in flight (the
// JetStream context's max pending) and checks every acknowledgement.
type publisher struct {
	js      jetstream.JetStream
	futures chan jetstream.PubAckFuture
	pending sync.WaitGroup // publishes not yet acknowledged or failed
	done    chan struct{}

	mu        sync.Mutex
	published int
	unchanged int
	failed    []*nats.Msg
	// lettered are the losing duplicates withdrawn by earlier runs. One
	// that wins now may be published again unchanged within the duplicates
	// window: its message id gets the run id, or JetStream would drop it as
	// a duplicate of the withdrawn message.
	lettered map[string]bool
}

// letteredBoxes lists the boxes the producer withdrew as losing duplicates
// (their letters in the DLQ).
func letteredBoxes(ctx context.Context, js jetstream.JetStream) (map[string]bool, error) {
	ids := map[string]bool{}
	err := deadletter.Scan(ctx, js, func(_ uint64, l deadletter.Letter, _ []byte) bool {
		if l.Source == deadletter.SourceProducer && l.Kind == deadletter.KindDuplicateName && box.ValidID(l.BoxID) {
			ids[l.BoxID] = true
		}
		return true
	})
	return ids, err
}

func newPublisher(js jetstream.JetStream) *publisher {
	p := &publisher{js: js, futures: make(chan jetstream.PubAckFuture, 1024), done: make(chan struct{})}
	go p.collect()
	return p
}

func (p *publisher) collect() {
	defer close(p.done)
	for f := range p.futures {
		select {
		case ack := <-f.Ok():
			p.count(ack)
		case <-f.Err():
			p.mu.Lock()
			p.failed = append(p.failed, f.Msg())
			p.mu.Unlock()
		}
		p.pending.Done()
	}
}

func (p *publisher) count(ack *jetstream.PubAck) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ack.Duplicate {
		p.unchanged++
	} else {
		p.published++
	}
}

func (p *publisher) publish(b box.Box) error {
	data, err := b.Encode()
	if err != nil {
		return fmt.Errorf("encode box %s: %w", b.ID, err)
	}
	msg := &nats.Msg{Subject: box.Subject(natsx.WorkSubject, b.ID), Data: data}
	// A long stall wait: when max-pending publishes are in flight (a
	// leader election, a slow disk), wait for acks instead of failing.
	id := b.MsgID()
	if p.lettered[b.ID] {
		id += "-" + b.RunID
	}
	f, err := p.js.PublishMsgAsync(msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(natsx.WorkStream),
		jetstream.WithStallWait(30*time.Second))
	if err != nil {
		return fmt.Errorf("publish box %s: %w", b.ID, err)
	}
	p.pending.Add(1)
	p.futures <- f
	return nil
}

// wait blocks until every publish so far is acknowledged, retrying failed
// ones synchronously. The message id makes a retry of a publish that did land
// harmless: JetStream reports it as a duplicate.
func (p *publisher) wait(ctx context.Context) error {
	acked := make(chan struct{})
	go func() { p.pending.Wait(); close(acked) }()
	select {
	case <-acked:
	case <-ctx.Done():
		return ctx.Err()
	}
	p.mu.Lock()
	failed := p.failed
	p.failed = nil
	p.mu.Unlock()
	for _, m := range failed {
		ack, err := publishWithRetry(ctx, p.js, m, m.Header.Get(nats.MsgIdHdr))
		if err != nil {
			return fmt.Errorf("JetStream did not acknowledge %s: %w", m.Subject, err)
		}
		p.count(ack)
	}
	return nil
}

// publishWithRetry publishes synchronously, retrying a few times over about
// ten seconds (a NATS leader election or reconnect takes a few seconds).
func publishWithRetry(ctx context.Context, js jetstream.JetStream, m *nats.Msg, msgID string) (*jetstream.PubAck, error) {
	var err error
	for attempt := 1; attempt <= 5; attempt++ {
		var ack *jetstream.PubAck
		ack, err = js.PublishMsg(ctx, m, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(natsx.WorkStream))
		if err == nil {
			return ack, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt) * time.Second):
		}
	}
	return nil, fmt.Errorf("after 5 attempts: %w", err)
}

func (p *publisher) counts() (published, unchanged int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.published, p.unchanged
}

func (p *publisher) stop() {
	close(p.futures)
	<-p.done
}

// clearStaleProducerLetters removes producer dead letters written by earlier
// runs. A complete run re-examines every eligible box and writes a fresh
// letter for each that is still bad, so an older producer letter is about a
// box that has since been fixed, deleted, or put back "In project".
//
// Only letters written before this run started are removed: a run going on
// at the same time (a manual -once beside the scheduled one) may have just
// replaced this run's letter for a box that is still bad.
func clearStaleProducerLetters(ctx context.Context, js jetstream.JetStream, runID string, started time.Time) (int, error) {
	stream, err := js.Stream(ctx, natsx.DLQStream)
	if err != nil {
		return 0, err
	}
	var stale []uint64
	err = deadletter.Scan(ctx, js, func(seq uint64, l deadletter.Letter, _ []byte) bool {
		if l.Source == deadletter.SourceProducer && l.RunID != runID && l.Time.Before(started) {
			stale = append(stale, seq)
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, seq := range stale {
		if err := stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return n, err
		}
		n++
	}
	return n, nil
}

// idAndName digs the id and name out of a row that did not decode, so its
// dead letter can still say which box it is.
func idAndName(raw []byte) (id, name string) {
	var r struct {
		ID   any `json:"id"`
		OID  any `json:"_id"`
		Name any `json:"name"`
	}
	if json.Unmarshal(raw, &r) != nil {
		return "", ""
	}
	if s, ok := r.ID.(string); ok {
		id = s
	} else if s, ok := r.OID.(string); ok {
		id = s
	}
	name, _ = r.Name.(string)
	return id, name
}

// RunIDFor names a run after the time it was scheduled for (UTC), so every
// replica and every rerun of the same scheduled sync agree on its id.
func RunIDFor(t time.Time) string { return t.UTC().Format("20060102T150405Z") }

// ManualRunID names a run started by hand (`producer -once`).
func ManualRunID(t time.Time) string {
	h := sha256.Sum256([]byte(t.String()))
	return RunIDFor(t) + "-once-" + hex.EncodeToString(h[:2])
}
