// Package replay moves boxes back onto the work stream: dead letters from
// OZMAP_BOXES_DLQ once their cause is fixed, or a whole past sync from
// OZMAP_BOXES (which keeps its messages: Limits retention).
package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/box"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/deadletter"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
)

// Filter selects dead letters. Empty fields match everything.
type Filter struct {
	BoxID  string // only this OZmap box
	Reason string // only letters whose reason or error contains this text (case-insensitive)
	DryRun bool   // list, move nothing
}

func (f Filter) match(l deadletter.Letter) bool {
	if f.BoxID != "" && l.BoxID != f.BoxID {
		return false
	}
	if f.Reason != "" {
		r := strings.ToLower(f.Reason)
		if !strings.Contains(strings.ToLower(l.Reason), r) && !strings.Contains(strings.ToLower(l.ErrorText), r) &&
			!strings.Contains(strings.ToLower(string(l.Kind)), r) {
			return false
		}
	}
	return true
}

// Report counts what a replay did.
type Report struct {
	Moved    int // republished to the work stream and removed from the DLQ
	Refused  int // producer letters: only an edit in OZmap cures them
	Matching int
}

// FromDLQ republishes matching dead letters to the work stream. A letter is
// removed from the DLQ only after JetStream acknowledged its republish.
// Letters the producer wrote (an invalid row, a losing duplicate name) are
// left in place: replaying them would send Sytex a box that must not reach it.
func FromDLQ(ctx context.Context, js jetstream.JetStream, f Filter, out io.Writer) (Report, error) {
	var rep Report
	dlq, err := js.Stream(ctx, natsx.DLQStream)
	if err != nil {
		return rep, fmt.Errorf("open %s: %w", natsx.DLQStream, err)
	}
	work, err := js.Stream(ctx, natsx.WorkStream)
	if err != nil {
		return rep, fmt.Errorf("open %s: %w", natsx.WorkStream, err)
	}
	type item struct {
		seq  uint64
		l    deadletter.Letter
		body []byte
	}
	var items []item
	err = deadletter.Scan(ctx, js, func(seq uint64, l deadletter.Letter, body []byte) bool {
		if f.match(l) {
			items = append(items, item{seq, l, body})
		}
		return true
	})
	if err != nil {
		return rep, err
	}
	for _, it := range items {
		rep.Matching++
		l := it.l
		if !l.Kind.Replayable() || !box.ValidID(l.BoxID) {
			rep.Refused++
			fmt.Fprintf(out, "left   box %s (%s): %s — not replayable: only an edit in OZmap cures it; the next sync picks it up\n", orDash(l.BoxID), l.Kind, l.Reason)
			continue
		}
		if f.DryRun {
			fmt.Fprintf(out, "would move box %s %q (%s): %s\n", l.BoxID, l.BoxName, l.Kind, l.Reason)
			continue
		}
		body := it.body
		subject := box.Subject(natsx.WorkSubject, l.BoxID)
		// Replay the latest version of the box: if the producer published a
		// newer one since, that is what Sytex should get.
		if m, err := work.GetLastMsgForSubject(ctx, subject); err == nil && m.Sequence > l.StreamSeq {
			body = m.Data
		}
		msg := &nats.Msg{Subject: subject, Data: body, Header: nats.Header{}}
		msg.Header.Set(deadletter.HeaderReplayedFrom, strconv.FormatUint(it.seq, 10))
		// A fresh message id: the original one may still be inside the
		// duplicates window and would be dropped.
		id := fmt.Sprintf("replay-%s-%d-%d", l.BoxID, it.seq, time.Now().UnixNano())
		if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(natsx.WorkStream)); err != nil {
			return rep, fmt.Errorf("republish box %s: %w (its dead letter is kept)", l.BoxID, err)
		}
		if err := dlq.DeleteMsg(ctx, it.seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return rep, fmt.Errorf("box %s was republished but its dead letter %d could not be removed: %w", l.BoxID, it.seq, err)
		}
		rep.Moved++
		fmt.Fprintf(out, "moved  box %s %q (%s)\n", l.BoxID, l.BoxName, l.Kind)
	}
	return rep, nil
}

// FromWork republishes the boxes of a past sync still on the work stream:
// those published since `since` ago, or those of one run id.
func FromWork(ctx context.Context, js jetstream.JetStream, since time.Duration, runID string, dryRun bool, out io.Writer) (int, error) {
	stream, err := js.Stream(ctx, natsx.WorkStream)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", natsx.WorkStream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	if info.State.Msgs == 0 {
		return 0, nil
	}
	last := info.State.LastSeq
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if since > 0 {
		start := time.Now().Add(-since)
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &start
	}
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return 0, err
	}
	n := 0
	for {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return n, err
		}
		got := 0
		done := false
		for m := range batch.Messages() {
			got++
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			if meta.Sequence.Stream > last {
				done = true
				break
			}
			var b struct {
				ID    string `json:"id"`
				Name  string `json:"name"`
				RunID string `json:"run_id"`
			}
			if json.Unmarshal(m.Data(), &b) != nil || (runID != "" && b.RunID != runID) {
				if meta.Sequence.Stream >= last {
					done = true
				}
				continue
			}
			if dryRun {
				fmt.Fprintf(out, "would republish box %s %q (run %s)\n", b.ID, b.Name, b.RunID)
			} else {
				msg := &nats.Msg{Subject: m.Subject(), Data: m.Data()}
				id := fmt.Sprintf("replay-%s-%d", m.Subject(), time.Now().UnixNano())
				if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(natsx.WorkStream)); err != nil {
					return n, fmt.Errorf("republish %s: %w", m.Subject(), err)
				}
			}
			n++
			if meta.Sequence.Stream >= last {
				done = true
			}
		}
		if done || got == 0 {
			return n, nil
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return n, err
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
