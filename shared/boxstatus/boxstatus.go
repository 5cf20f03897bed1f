// Package boxstatus keeps the last outcome of every box in the JetStream KV
// bucket OZMAP_SYNC_BOXES, keyed by OZmap box id, so "what happened to box
// X?" is `nats kv get OZMAP_SYNC_BOXES <id>`.
//
// Statuses are written with asynchronous publishes: a status write must not
// slow the pipeline, and a lost one is replaced by the box's next outcome.
// The authoritative record stays Sytex itself and the dead-letter stream.
package boxstatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/box"
)

// Bucket is the KV bucket holding one status per box.
const Bucket = "OZMAP_SYNC_BOXES"

// Outcomes.
const (
	Created     = "created"
	Updated     = "updated"
	Unchanged   = "unchanged"
	WouldCreate = "would-create" // CONSUMER_DRY_RUN: nothing written
	WouldUpdate = "would-update"
	Retrying    = "retrying" // a transient failure; another attempt is scheduled
	Failed      = "failed"   // dead-lettered: see Error and DeadLetter
)

// Status is a box's last outcome.
type Status struct {
	BoxID      string    `json:"box_id"`
	Name       string    `json:"name,omitempty"`
	RunID      string    `json:"run_id,omitempty"`
	Outcome    string    `json:"outcome"`
	SytexID    int64     `json:"sytex_id,omitempty"`
	Changed    []string  `json:"changed,omitempty"` // fields written (or that would be) on an update
	At         time.Time `json:"at"`
	Error      string    `json:"error,omitempty"`
	DeadLetter string    `json:"dead_letter,omitempty"` // the dead-letter kind, when Failed
	Attempts   int       `json:"attempts,omitempty"`
	StreamSeq  uint64    `json:"stream_seq,omitempty"` // the message on OZMAP_BOXES (retrying)
	DryRun     bool      `json:"dry_run,omitempty"`
}

// maxErrorLen bounds the error text kept per box.
const maxErrorLen = 512

// Open creates the bucket if needed (one value per box, no expiry: a box's
// status stays until its next outcome).
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "last sync outcome per OZmap box id", History: 1,
		Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("open KV bucket %s: %w", Bucket, err)
	}
	return kv, nil
}

// Get reads a box's status.
func Get(ctx context.Context, kv jetstream.KeyValue, boxID string) (Status, error) {
	e, err := kv.Get(ctx, boxID)
	if err != nil {
		return Status{}, err
	}
	var s Status
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return Status{}, fmt.Errorf("status of box %s is not valid JSON: %w", boxID, err)
	}
	return s, nil
}

// PriorAttempts reads, from the box's status, how many failed attempts the
// message at streamSeq already had: the attempts of a "retrying" status of
// that same message, else 0. ok is false when the status cannot be read.
func PriorAttempts(ctx context.Context, kv jetstream.KeyValue, boxID string, streamSeq uint64) (n int, ok bool) {
	s, err := Get(ctx, kv, boxID)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, true
	case err != nil:
		return 0, false
	case s.Outcome == Retrying && s.StreamSeq == streamSeq:
		return s.Attempts, true
	}
	return 0, true
}

// Writer writes statuses asynchronously: Put publishes without waiting and
// one goroutine checks the acknowledgements in order.
type Writer struct {
	js      jetstream.JetStream
	log     *slog.Logger
	futures chan pendingPut
	failed  atomic.Int64
	warned  atomic.Bool

	mu      sync.Mutex
	sent    uint64        // puts handed to collect
	checked uint64        // of those, acknowledged or failed
	changed chan struct{} // closed and replaced when checked grows
}

type pendingPut struct {
	id string
	f  jetstream.PubAckFuture
}

// NewWriter writes statuses through js, into a bucket Open created. js
// should have an async publish timeout (jetstream.WithPublishAsyncTimeout),
// or a status whose acknowledgement never comes is waited for forever.
func NewWriter(js jetstream.JetStream, log *slog.Logger) *Writer {
	if log == nil {
		log = slog.Default()
	}
	w := &Writer{js: js, log: log, futures: make(chan pendingPut, 4096), changed: make(chan struct{})}
	go w.collect()
	return w
}

// collect checks acknowledgements for the life of the process.
func (w *Writer) collect() {
	for p := range w.futures {
		select {
		case <-p.f.Ok():
		case err := <-p.f.Err():
			w.fail(p.id, err)
		}
		w.mu.Lock()
		w.checked++
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
	}
}

// Put records s. It does not wait for JetStream; Flush does. A box without a
// valid id (an undecodable message) has no key and is not recorded.
func (w *Writer) Put(s Status) {
	if !box.ValidID(s.BoxID) {
		return
	}
	if len(s.Error) > maxErrorLen {
		s.Error = s.Error[:maxErrorLen] + "…"
	}
	if s.At.IsZero() {
		s.At = time.Now().UTC()
	}
	data, err := json.Marshal(s)
	if err != nil {
		return
	}
	f, err := w.js.PublishAsync("$KV."+Bucket+"."+s.BoxID, data)
	if err != nil {
		w.fail(s.BoxID, err)
		return
	}
	// Never block the caller (a worker): with the queue full, the status is
	// still published, only its acknowledgement goes unchecked.
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case w.futures <- pendingPut{s.BoxID, f}:
		w.sent++
	default:
	}
}

func (w *Writer) fail(id string, err error) {
	w.failed.Add(1)
	// One warning, not one per box: if the bucket is gone every box fails.
	if w.warned.CompareAndSwap(false, true) {
		w.log.Warn("could not record box status in "+Bucket+" (further failures are counted, not logged)", "box_id", id, "err", err)
	}
}

// Failed is how many status writes failed.
func (w *Writer) Failed() int64 { return w.failed.Load() }

// Flush waits until every status put before it was called is stored or
// failed, or ctx ends. Puts made meanwhile are not waited for.
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	target := w.sent
	w.mu.Unlock()
	for {
		w.mu.Lock()
		done, changed := w.checked >= target, w.changed
		w.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return errors.New("box statuses still in flight: " + ctx.Err().Error())
		}
	}
}
