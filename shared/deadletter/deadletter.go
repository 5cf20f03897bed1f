// Package deadletter writes and reads the dead-letter stream OZMAP_BOXES_DLQ.
// A letter is the failed box's original body plus Sync-* headers that tell an
// operator, from `nats stream view OZMAP_BOXES_DLQ` alone, what failed, why,
// and where the box came from.
package deadletter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/box"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
)

// Header names. They are part of the operator's interface (README, alerts).
const (
	HeaderReason       = "Sync-Reason"      // human sentence
	HeaderKind         = "Sync-Kind"        // one of the Kind values
	HeaderSource       = "Sync-Source"      // producer | consumer
	HeaderHTTPStatus   = "Sync-Http-Status" // last HTTP status from Sytex/OZmap, if any
	HeaderError        = "Sync-Error"       // the remote error text, truncated
	HeaderAttempts     = "Sync-Attempts"    // real attempts made
	HeaderSubject      = "Sync-Original-Subject"
	HeaderStreamSeq    = "Sync-Original-Stream-Seq"
	HeaderTime         = "Sync-Time" // RFC 3339, UTC
	HeaderBoxID        = "Sync-Box-Id"
	HeaderBoxName      = "Sync-Box-Name"
	HeaderRunID        = "Sync-Run-Id"
	HeaderWinnerID     = "Sync-Winner-Id" // for duplicate names: the box that was synced instead
	HeaderReplayedFrom = "Sync-Replayed-From-Dlq-Seq"
)

// Kind classifies a dead letter. Producer kinds are cured only by an edit in
// OZmap (the next sync picks it up); consumer kinds can be replayed once the
// cause (Sytex data, configuration, an outage) is fixed.
type Kind string

const (
	KindInvalidRow    Kind = "invalid-row"    // producer: the OZmap row fails validation
	KindDuplicateName Kind = "duplicate-name" // producer: another box with the same name won
	KindUndecodable   Kind = "undecodable"    // consumer: the message is not a valid box message
	KindUnmappedType  Kind = "unmapped-type"  // consumer: no ne_type for the box type and no default
	KindRejected      Kind = "sytex-rejected" // consumer: Sytex answered 4xx
	KindExhausted     Kind = "max-attempts"   // consumer: transient failures CONSUMER_MAX_ATTEMPTS times
)

// Source says which program wrote a letter.
type Source string

const (
	SourceProducer Source = "producer"
	SourceConsumer Source = "consumer"
)

// Replayable reports whether a replay can cure a letter of this kind. Invalid
// rows and losing duplicates must never reach Sytex by way of a replay: only
// an edit in OZmap cures them.
func (k Kind) Replayable() bool {
	switch k {
	case KindRejected, KindExhausted, KindUnmappedType:
		return true
	}
	return false // producer kinds, undecodable messages, and anything unknown
}

// Letter is what is known about one failure.
type Letter struct {
	Kind       Kind
	Source     Source
	Reason     string
	HTTPStatus int
	ErrorText  string
	Attempts   int
	Subject    string // original subject, if the box was on the work stream
	StreamSeq  uint64 // original stream sequence
	BoxID      string
	BoxName    string
	RunID      string
	WinnerID   string
	Time       time.Time
}

// MaxHeaderValue bounds each header value: Sytex's error body, a box name or
// a reason can be arbitrarily long and must not blow up the DLQ message.
const MaxHeaderValue = 512

// Subject is the DLQ subject for a box: one subject per valid box id, or a
// hash of whatever identifies the bad row, so a hostile id never becomes a
// subject token.
func Subject(boxID string, raw []byte) string {
	if box.ValidID(boxID) {
		return natsx.DLQSubject + "." + boxID
	}
	h := sha256.New()
	h.Write([]byte(boxID))
	h.Write([]byte{0})
	h.Write(raw)
	return natsx.DLQSubject + ".invalid." + hex.EncodeToString(h.Sum(nil)[:12])
}

// Headers renders a letter as NATS headers, every value truncated and
// stripped of line breaks (headers are line-based).
func (l Letter) Headers() nats.Header {
	h := nats.Header{}
	set := func(k, v string) {
		if v != "" {
			h.Set(k, clean(v))
		}
	}
	set(HeaderKind, string(l.Kind))
	set(HeaderSource, string(l.Source))
	set(HeaderReason, l.Reason)
	if l.HTTPStatus != 0 {
		set(HeaderHTTPStatus, strconv.Itoa(l.HTTPStatus))
	}
	set(HeaderError, l.ErrorText)
	if l.Attempts > 0 {
		set(HeaderAttempts, strconv.Itoa(l.Attempts))
	}
	set(HeaderSubject, l.Subject)
	if l.StreamSeq > 0 {
		set(HeaderStreamSeq, strconv.FormatUint(l.StreamSeq, 10))
	}
	t := l.Time
	if t.IsZero() {
		t = time.Now()
	}
	set(HeaderTime, t.UTC().Format(time.RFC3339Nano))
	set(HeaderBoxID, l.BoxID)
	set(HeaderBoxName, l.BoxName)
	set(HeaderRunID, l.RunID)
	set(HeaderWinnerID, l.WinnerID)
	return h
}

// FromHeaders reads a letter back (for replay and reporting).
func FromHeaders(h nats.Header) Letter {
	atoi := func(s string) int { n, _ := strconv.Atoi(s); return n }
	seq, _ := strconv.ParseUint(h.Get(HeaderStreamSeq), 10, 64)
	t, _ := time.Parse(time.RFC3339Nano, h.Get(HeaderTime))
	return Letter{
		Kind:       Kind(h.Get(HeaderKind)),
		Source:     Source(h.Get(HeaderSource)),
		Reason:     h.Get(HeaderReason),
		HTTPStatus: atoi(h.Get(HeaderHTTPStatus)),
		ErrorText:  h.Get(HeaderError),
		Attempts:   atoi(h.Get(HeaderAttempts)),
		Subject:    h.Get(HeaderSubject),
		StreamSeq:  seq,
		BoxID:      h.Get(HeaderBoxID),
		BoxName:    h.Get(HeaderBoxName),
		RunID:      h.Get(HeaderRunID),
		WinnerID:   h.Get(HeaderWinnerID),
		Time:       t,
	}
}

// Publish writes a letter with the failed message's body and waits for
// JetStream to store it. Only after that may the caller Term the original:
// a box is never acknowledged away before its dead letter is safe.
func Publish(ctx context.Context, js jetstream.JetStream, body []byte, l Letter) error {
	if len(body) > box.MaxMessageBytes {
		// Keep the letter small: the headers say what it was; the body
		// keeps a prefix for inspection.
		body = body[:box.MaxMessageBytes]
	}
	subject := Subject(l.BoxID, body)
	if l.Kind == KindUndecodable {
		// Garbage on a box's subject must not replace that box's real letter.
		subject = Subject("", append([]byte(l.Subject+"\x00"), body...))
	}
	msg := &nats.Msg{Subject: subject, Header: l.Headers(), Data: body}
	if _, err := js.PublishMsg(ctx, msg, jetstream.WithExpectStream(natsx.DLQStream)); err != nil {
		return fmt.Errorf("publish dead letter for box %q: %w", clean(l.BoxID), err)
	}
	return nil
}

func clean(s string) string {
	out := make([]rune, 0, min(len(s), MaxHeaderValue))
	n := 0
	for _, r := range s {
		if n >= MaxHeaderValue {
			out = append(out, '…')
			break
		}
		if r == '\r' || r == '\n' || r == utf8.RuneError {
			r = ' '
		}
		out = append(out, r)
		n++
	}
	return string(out)
}

// Scan calls fn for every letter in the dead-letter stream, oldest first,
// until fn returns false. It reads with an ordered consumer, which leaves no
// state behind on the server.
func Scan(ctx context.Context, js jetstream.JetStream, fn func(seq uint64, l Letter, body []byte) bool) error {
	stream, err := js.Stream(ctx, natsx.DLQStream)
	if err != nil {
		return fmt.Errorf("open %s: %w", natsx.DLQStream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("read %s info: %w", natsx.DLQStream, err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	last := info.State.LastSeq
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return fmt.Errorf("read %s: %w", natsx.DLQStream, err)
	}
	for {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("read %s: %w", natsx.DLQStream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			if !fn(meta.Sequence.Stream, FromHeaders(m.Headers()), m.Data()) {
				return nil
			}
			if meta.Sequence.Stream >= last || meta.NumPending == 0 {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("read %s: %w", natsx.DLQStream, err)
		}
		if n == 0 {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}
