// Package outcomes records what the consumer did with each box where an
// operator looks for it: the box's last outcome in OZMAP_SYNC_BOXES, and
// per-run counts merged into the run's report in OZMAP_SYNC_RUNS.
//
// Counts are kept in memory per run and merged into the report every few
// seconds and at shutdown, so a report costs one write per replica per
// interval, not one per box. A replica killed with SIGKILL loses at most one
// interval of counts; each box's own status is written as it happens.
package outcomes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/consumer/upsert"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/consumer/worker"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/boxstatus"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/runreport"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/sytex"
)

// maxRuns bounds the runs with counts waiting to be merged (replays of old
// runs can mix several); beyond it, counts for new runs are dropped with a
// warning rather than grow memory while the bucket is unreachable.
const maxRuns = 1000

// Recorder turns worker events into box statuses and run counts.
type Recorder struct {
	Status *boxstatus.Writer
	Runs   *runreport.Store
	DryRun bool
	Log    *slog.Logger

	mu      sync.Mutex
	pending map[string]runreport.Synced // by run id: counted, not yet sent

	flushMu  sync.Mutex                 // one Flush at a time
	writer   string                     // this process, in the reports' merged_batches
	seq      uint64                     // the last batch number used
	inflight map[string]runreport.Batch // by run id: sent, outcome unknown; retried as is
}

// Record is a worker.Options.OnEvent: it must not block.
func (r *Recorder) Record(e worker.Event) {
	now := time.Now().UTC()
	st := boxstatus.Status{BoxID: e.Box.ID, Name: e.Box.Name, RunID: e.Box.RunID, At: now,
		Attempts: e.Attempts, StreamSeq: e.StreamSeq, DryRun: r.DryRun, SytexID: e.Result.ElementID, Changed: e.Result.Changed}
	var d runreport.Synced
	switch {
	case e.Kind != "":
		st.Outcome, st.DeadLetter, st.Error = boxstatus.Failed, string(e.Kind), errorText(e)
		d.DeadLettered = 1
	case e.Retried:
		st.Outcome, st.Error = boxstatus.Retrying, errorText(e)
		d.Retries = 1
	default:
		switch e.Result.Outcome {
		case upsert.Created:
			st.Outcome, d.Created = boxstatus.Created, 1
		case upsert.Updated:
			st.Outcome, d.Updated = boxstatus.Updated, 1
		case upsert.Unchanged:
			st.Outcome, d.Unchanged = boxstatus.Unchanged, 1
		case upsert.WouldCreate:
			st.Outcome, d.WouldCreate = boxstatus.WouldCreate, 1
		case upsert.WouldUpdate:
			st.Outcome, d.WouldUpdate = boxstatus.WouldUpdate, 1
		default:
			return
		}
	}
	if r.Status != nil {
		r.Status.Put(st)
	}
	if r.Runs == nil || !runreport.ValidRunID(e.Box.RunID) {
		return
	}
	d.Last = now
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == nil {
		r.pending = map[string]runreport.Synced{}
	}
	cur, ok := r.pending[e.Box.RunID]
	if !ok && len(r.pending) >= maxRuns {
		r.log().Warn("too many runs with unrecorded counts; dropping counts for this one", "run_id", e.Box.RunID)
		return
	}
	cur.Add(d)
	r.pending[e.Box.RunID] = cur
}

func errorText(e worker.Event) string {
	text := e.Reason
	var ae *sytex.APIError
	switch {
	case errors.As(e.Err, &ae):
		text = joinText(text, ae.Error())
	case e.Err != nil:
		text = joinText(text, e.Err.Error())
	}
	return text
}

func joinText(a, b string) string {
	if a == "" || a == b {
		return b
	}
	return a + ": " + b
}

func (r *Recorder) log() *slog.Logger {
	if r.Log == nil {
		return slog.Default()
	}
	return r.Log
}

// Run merges counts into the run reports every interval until ctx ends.
// Each merge runs on its own deadline, not ctx: a write cut off by SIGTERM
// may land anyway, and the batches make that safe, but a merge in progress
// is better finished.
func (r *Recorder) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), every+10*time.Second)
			r.Flush(fctx)
			cancel()
		}
	}
}

// Flush merges the counts gathered so far into the run reports and waits for
// the box statuses in flight. A batch whose merge failed is kept and sent
// again unchanged by the next Flush: if the failed write did land, the
// report recognises the batch and does not count it twice.
func (r *Recorder) Flush(ctx context.Context) {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	// Counts first: box statuses slow to be acknowledged must not use up
	// the deadline of the last merge at shutdown.
	defer func() {
		if r.Status != nil {
			if err := r.Status.Flush(ctx); err != nil {
				r.log().Warn("box statuses not all recorded", "err", err)
			}
		}
	}()
	if r.Runs == nil {
		return
	}
	if r.writer == "" {
		// A restarted container keeps its host name and pid 1: 64 random
		// bits tell its incarnations apart, and batch numbers start from
		// the clock, above any an earlier incarnation could have used.
		r.writer = writerID()
		r.seq = uint64(time.Now().UnixNano())
	}
	if r.inflight == nil {
		r.inflight = map[string]runreport.Batch{}
	}
	r.mu.Lock()
	for runID, d := range r.pending {
		if _, busy := r.inflight[runID]; busy {
			continue // its earlier batch must land first
		}
		r.seq++
		r.inflight[runID] = runreport.Batch{Writer: r.writer, Seq: r.seq, DryRun: r.DryRun, Synced: d}
		delete(r.pending, runID)
	}
	r.mu.Unlock()
	for runID, b := range r.inflight {
		err := r.Runs.Merge(ctx, runID, b)
		switch {
		case errors.Is(err, runreport.ErrLastStale):
			r.log().Warn("run counts recorded; the \"last\" report lags until the next update", "run_id", runID, "err", err)
		case err != nil:
			r.log().Warn("could not add counts to the run report; will retry", "run_id", runID, "err", err)
			continue
		}
		delete(r.inflight, runID)
		d := b.Synced
		r.log().Info("run counts recorded", "run_id", runID, "created", d.Created, "updated", d.Updated,
			"unchanged", d.Unchanged, "dead_lettered", d.DeadLettered, "would_create", d.WouldCreate,
			"would_update", d.WouldUpdate, "retries", d.Retries, "dry_run", r.DryRun)
	}
}

// writerID names this process in the reports: host, pid and a random part
// (a restarted process with a reused pid is another writer).
func writerID() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "consumer"
	}
	return fmt.Sprintf("%s-%d-%016x", host, os.Getpid(), rand.Uint64())
}
