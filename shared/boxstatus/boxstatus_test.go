package boxstatus

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx/natstest"
)

func TestPutFlushGet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.Start(t, natsx.Topology{}, jetstream.WithPublishAsyncTimeout(5*time.Second))
	w := NewWriter(js, slog.New(slog.DiscardHandler))
	// Before the bucket exists every put fails, and is counted, not fatal.
	w.Put(Status{BoxID: "5da61d35493d9c0006665404", Outcome: Created})
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if w.Failed() != 1 {
		t.Fatalf("failed puts = %d, want 1", w.Failed())
	}
	kv, err := Open(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	const id = "5da61d35493d9c0006665404"
	w.Put(Status{BoxID: id, Name: "CTO-1", RunID: "r1", Outcome: Retrying, Error: "503", Attempts: 1})
	w.Put(Status{BoxID: id, Name: "CTO-1", RunID: "r1", Outcome: Failed, DeadLetter: "max-attempts", Error: strings.Repeat("x", 2000), Attempts: 10})
	w.Put(Status{BoxID: "not-an-id", Outcome: Created}) // no key: ignored
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := Get(ctx, kv, id)
	if err != nil {
		t.Fatal(err)
	}
	if s.Outcome != Failed || s.DeadLetter != "max-attempts" || s.Attempts != 10 || s.At.IsZero() || len(s.Error) > maxErrorLen+4 {
		t.Fatalf("status = %+v (the last put wins, error truncated)", s)
	}
	if w.Failed() != 1 {
		t.Fatalf("failed puts = %d, want still 1", w.Failed())
	}
	keys, err := kv.Keys(ctx)
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys %v, %v; want only the valid id", keys, err)
	}
}

// Workers put while the recorder flushes every few seconds: no panic, and
// each Flush returns once what was put before it is checked.
func TestPutsDuringFlushes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.Start(t, natsx.Topology{}, jetstream.WithPublishAsyncTimeout(5*time.Second))
	if _, err := Open(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	w := NewWriter(js, slog.New(slog.DiscardHandler))
	stop := make(chan struct{})
	done := make(chan struct{})
	for g := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				w.Put(Status{BoxID: fmt.Sprintf("%012x%012x", g+1, i%50+1), Outcome: Unchanged})
				time.Sleep(100 * time.Microsecond) // a worker's pace, not a flood

			}
		}()
	}
	for range 40 {
		fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
		err := w.Flush(fctx)
		fcancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	for range 8 {
		<-done
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if w.Failed() != 0 {
		t.Fatalf("%d puts failed", w.Failed())
	}
}
