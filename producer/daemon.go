package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/producer/schedule"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/producer/syncrun"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
)

// daemon runs the scheduled syncs. Any number of producer replicas may run:
// a sync is claimed through a TTL'd key in a JetStream KV bucket, so each
// scheduled sync runs once; a replica that lost the claim watches until the
// run is reported complete, and takes over if the holder dies.
type daemon struct {
	p       *producer
	lock    jetstream.KeyValue
	sched   schedule.Schedule
	catchup time.Duration
	log     *slog.Logger
	owner   string
}

func (d *daemon) loop(ctx context.Context) error {
	host, _ := os.Hostname()
	d.owner = host + "/" + syncrun.ManualRunID(time.Now())
	if at, ok := d.sched.Missed(time.Now(), d.catchup); ok {
		d.log.Info("catching up a scheduled sync missed while the producer was down", "scheduled_for", at)
		d.runScheduled(ctx, at)
	}
	for {
		next := d.sched.Next(time.Now())
		d.log.Info("next sync scheduled", "at", next, "in", time.Until(next).Round(time.Second).String())
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			d.log.Info("producer stopping")
			return nil
		case <-t.C:
		}
		d.runScheduled(ctx, next)
	}
}

// runScheduled runs the sync scheduled for at unless it already ran, or
// waits for the replica that holds it.
func (d *daemon) runScheduled(ctx context.Context, at time.Time) {
	runID := syncrun.RunIDFor(at)
	for ctx.Err() == nil {
		if d.p.reported(ctx, runID) {
			d.log.Info("scheduled sync already ran", "run_id", runID)
			return
		}
		rev, err := d.lock.Create(ctx, natsx.LockKey, []byte(d.owner+" "+runID))
		if err == nil {
			// A holder records its report before it releases the lock, so
			// a report that landed between the check above and this claim
			// is visible now: the run is done, do not run it twice.
			if d.p.reported(ctx, runID) {
				d.log.Info("scheduled sync already ran", "run_id", runID)
				d.release(ctx, rev)
				return
			}
			d.holdAndRun(ctx, runID, rev)
			return
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			d.log.Warn("could not take the sync lock; retrying", "run_id", runID, "err", err)
		} else {
			d.log.Info("another producer replica holds the sync; watching it", "run_id", runID)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(natsx.LockTTL / 3):
		}
	}
}

func (d *daemon) holdAndRun(ctx context.Context, runID string, rev uint64) {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Refresh well within the TTL, and ride out a NATS reconnect: give
		// the run up only when another replica holds the key, or when our
		// last refresh is so old the key may have expired.
		t := time.NewTicker(natsx.LockTTL / 6)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				r, err := d.lock.Update(runCtx, natsx.LockKey, []byte(d.owner+" "+runID), rev)
				if err == nil {
					rev, last = r, time.Now()
					continue
				}
				if runCtx.Err() != nil {
					return
				}
				if !lockTaken(err) && time.Since(last) < natsx.LockTTL*2/3 {
					d.log.Warn("could not refresh the sync lock; retrying", "run_id", runID, "err", err)
					continue
				}
				d.log.Error("lost the sync lock; stopping this run (another replica will take over)", "run_id", runID, "err", err)
				cancel()
				return
			}
		}
	}()
	if err := d.p.syncOnce(runCtx, runID); err != nil {
		d.log.Error("sync failed", "run_id", runID, "err", err)
	}
	cancel()
	<-done
	d.release(ctx, rev)
}

// release deletes the lock key if it is still at our revision.
func (d *daemon) release(ctx context.Context, rev uint64) {
	dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer dcancel()
	if err := d.lock.Delete(dctx, natsx.LockKey, jetstream.LastRevision(rev)); err != nil {
		d.log.Warn("could not release the sync lock (it expires by itself)", "err", err)
	}
}

// lockTaken reports whether a lock update failed because the key changed
// under us: another replica holds the sync now.
func lockTaken(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
