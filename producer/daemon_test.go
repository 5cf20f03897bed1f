package main

import (
	"context"
	"errors"
	"io"
	"iter"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/producer/syncrun"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx/natstest"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/runreport"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/telemetry"
)

// countingSource counts the syncs started against it (each asks for the box
// types first) and fails them.
type countingSource struct{ runs atomic.Int32 }

func (s *countingSource) BoxTypes(context.Context) (map[string]string, error) {
	s.runs.Add(1)
	return nil, errors.New("this sync must not run")
}

func (s *countingSource) Boxes(context.Context) iter.Seq2[ozmap.Row, error] {
	return func(func(ozmap.Row, error) bool) {}
}

// racingLock runs before() once, just before the first claim: what another
// replica does between this one's report check and its claim.
type racingLock struct {
	jetstream.KeyValue
	once   sync.Once
	before func()
}

func (l *racingLock) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	l.once.Do(l.before)
	return l.KeyValue.Create(ctx, key, value, opts...)
}

// A replica that found no report for the scheduled run, then claimed the
// lock just after the holder recorded its report and released the lock,
// must not run the sync a second time.
func TestScheduledRunNotRepeatedWhenHolderFinishesBeforeClaim(t *testing.T) {
	js := natstest.Start(t, natsx.DefaultTopology())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	runs, err := runreport.Open(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	lockKV, err := natsx.Lock(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 3, 21, 0, 0, 0, time.UTC)
	runID := syncrun.RunIDFor(at)
	src := &countingSource{}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := &producer{runner: &syncrun.Runner{OZmap: src, JS: js, Log: log}, runs: runs, log: log, stdout: io.Discard, metrics: telemetry.NewMetrics()}
	lock := &racingLock{KeyValue: lockKV, before: func() {
		// The holder ends its run: it records the report, then releases
		// the lock (the key was never taken in this test: nothing to delete).
		if _, err := runs.RecordRun(ctx, runreport.Summary{RunID: runID, Started: at, Finished: at.Add(time.Minute)}); err != nil {
			t.Errorf("record the holder's report: %v", err)
		}
	}}
	d := &daemon{p: p, lock: lock, log: log, owner: "test-replica"}
	d.runScheduled(ctx, at)
	if n := src.runs.Load(); n != 0 {
		t.Errorf("scheduled run %s started %d more time(s) after its holder had recorded it", runID, n)
	}
	if _, err := lockKV.Get(ctx, natsx.LockKey); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the sync lock is still held after the replica stood down: %v", err)
	}
}
