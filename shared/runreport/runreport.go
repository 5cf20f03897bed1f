// Package runreport keeps one report per sync run in the JetStream KV bucket
// OZMAP_SYNC_RUNS: what the producer read and published (written when its
// run ends) and what the consumers did with the run's boxes (merged in as
// they work). `nats kv get OZMAP_SYNC_RUNS last` shows the latest run,
// `nats kv get OZMAP_SYNC_RUNS run.<id>` any kept run.
//
// Several processes write one report: the producer once, every consumer
// replica every few seconds. Every write is a compare-and-set on the key's
// revision, retried on conflict, so no count is lost or doubled. "last" is a
// copy of the newest run's report carrying the revision it was copied from;
// a copy never replaces a newer one.
package runreport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
)

// Summary is the producer's part of a run report.
type Summary struct {
	RunID      string         `json:"run_id"`
	Started    time.Time      `json:"started"`
	Finished   time.Time      `json:"finished"`
	Read       int            `json:"read"`       // rows OZmap returned
	Eligible   int            `json:"eligible"`   // implanted boxes
	Published  int            `json:"published"`  // new messages stored on the work stream
	Unchanged  int            `json:"unchanged"`  // already on the stream with the same content (dedup window)
	Skipped    map[string]int `json:"skipped"`    // by reason
	Duplicates int            `json:"duplicates"` // names shared by more than one eligible box
	Cleared    int            `json:"cleared"`    // stale producer dead letters removed (their boxes are fine now)
	Err        string         `json:"error,omitempty"`
}

// String is the one-line summary the producer prints.
func (s Summary) String() string {
	keys := make([]string, 0, len(s.Skipped))
	for k := range s.Skipped {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var skipped []string
	total := 0
	for _, k := range keys {
		skipped = append(skipped, fmt.Sprintf("%s=%d", k, s.Skipped[k]))
		total += s.Skipped[k]
	}
	detail := ""
	if len(skipped) > 0 {
		detail = " (" + strings.Join(skipped, ", ") + ")"
	}
	return fmt.Sprintf("run %s: read %d boxes, %d eligible, %d published, %d already queued unchanged, %d skipped%s in %s",
		s.RunID, s.Read, s.Eligible, s.Published, s.Unchanged, total, detail, s.Finished.Sub(s.Started).Round(time.Millisecond))
}

// Synced counts what the consumers did with a run's boxes. A dry run
// (CONSUMER_DRY_RUN) is counted apart, with creates and updates as would-be.
type Synced struct {
	Created      int       `json:"created"`
	Updated      int       `json:"updated"`
	Unchanged    int       `json:"unchanged"`
	DeadLettered int       `json:"dead_lettered"`
	WouldCreate  int       `json:"would_create,omitempty"`
	WouldUpdate  int       `json:"would_update,omitempty"`
	Retries      int       `json:"retries"` // transient failures handed back for a later attempt
	Last         time.Time `json:"last,omitempty"`
}

// Add adds d's counts to s and keeps the later Last.
func (s *Synced) Add(d Synced) {
	s.Created += d.Created
	s.Updated += d.Updated
	s.Unchanged += d.Unchanged
	s.DeadLettered += d.DeadLettered
	s.WouldCreate += d.WouldCreate
	s.WouldUpdate += d.WouldUpdate
	s.Retries += d.Retries
	if d.Last.After(s.Last) {
		s.Last = d.Last
	}
}

// IsZero reports whether nothing was counted.
func (s Synced) IsZero() bool { return s == Synced{} }

// Report is one run's report as stored.
type Report struct {
	Summary
	Synced Synced `json:"synced"`
	// DryRun is what consumers with CONSUMER_DRY_RUN found, writing nothing.
	DryRun *Synced `json:"dry_run,omitempty"`
	// Revision of run.<id> this report was copied from (in "last" only).
	Revision uint64 `json:"revision,omitempty"`
	// Merged is, per consumer process, the last of its count batches merged
	// in: a batch retried after an ambiguous failure (a timeout on a write
	// that landed) is recognised and not counted twice.
	Merged map[string]uint64 `json:"merged_batches,omitempty"`
}

// Batch is one consumer process's counts for one run since its last merge.
// Writer names the process; Seq grows with every batch it sends, and a
// failed batch is retried unchanged, with the same Seq.
type Batch struct {
	Writer string
	Seq    uint64
	DryRun bool
	Synced Synced
}

// Ended reports whether the producer finished the run (successfully or
// not). Consumers may start a report before that.
func (r Report) Ended() bool { return !r.Finished.IsZero() }

// LastKey is the key holding a copy of the newest run's report.
const LastKey = "last"

// Key is the key of a run's report.
func Key(runID string) string { return "run." + runID }

// Store reads and writes run reports. Reads go to the bucket's stream
// leader: a KV get may be answered by a lagging replica, and a stale read
// here would make a finished run look unfinished (and run again) or leave
// "last" behind.
type Store struct {
	kv jetstream.KeyValue
	nc *nats.Conn
}

// kvStream is the stream behind the bucket.
const kvStream = "KV_" + natsx.RunsBucket

// Open opens (creating if needed) the OZMAP_SYNC_RUNS bucket.
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (*Store, error) {
	kv, err := natsx.Runs(ctx, js, replicas)
	if err != nil {
		return nil, err
	}
	return &Store{kv: kv, nc: js.Conn()}, nil
}

// ValidRunID reports whether id can be a key token: what RunIDFor and
// ManualRunID make. A box message from the stream is hostile input; its run
// id is checked before it names a key.
func ValidRunID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Get returns a run's report.
func (s *Store) Get(ctx context.Context, runID string) (Report, error) {
	r, _, err := s.get(ctx, Key(runID))
	return r, err
}

// Last returns the newest run's report.
func (s *Store) Last(ctx context.Context) (Report, error) {
	r, _, err := s.get(ctx, LastKey)
	return r, err
}

// ErrNotFound is returned for a run with no report.
var ErrNotFound = errors.New("no such run report")

func (s *Store) get(ctx context.Context, key string) (Report, uint64, error) {
	m, err := natsx.LeaderGetLast(ctx, s.nc, kvStream, "$KV."+natsx.RunsBucket+"."+key)
	if errors.Is(err, natsx.ErrNoMessage) {
		return Report{}, 0, ErrNotFound
	}
	if err != nil {
		return Report{}, 0, fmt.Errorf("read %s %s: %w", natsx.RunsBucket, key, err)
	}
	if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		// Deleted by hand: the next write must not assume the key is absent.
		return Report{}, m.Sequence, fmt.Errorf("%s %s: %w (deleted)", natsx.RunsBucket, key, ErrNotFound)
	}
	var r Report
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return Report{}, m.Sequence, fmt.Errorf("%s %s holds %d bytes that are not a run report: %w", natsx.RunsBucket, key, len(m.Data), err)
	}
	return r, m.Sequence, nil
}

// maxConflicts bounds compare-and-set retries; each conflict means another
// writer made progress, so this is only reached under absurd contention.
const maxConflicts = 50

// update applies change to key's report with compare-and-set, creating it
// when missing, and returns the stored report and its revision.
func (s *Store) update(ctx context.Context, key string, change func(*Report) bool) (Report, uint64, error) {
	for try := range maxConflicts {
		cur, rev, err := s.get(ctx, key)
		switch {
		case err != nil && rev == 0 && !errors.Is(err, ErrNotFound):
			return Report{}, 0, err
		case err != nil:
			// Missing, deleted or unreadable: start afresh (a revision
			// other than 0 still guards the write).
			cur = Report{}
		}
		if !change(&cur) {
			return cur, rev, nil // nothing to write
		}
		data, err := json.Marshal(cur)
		if err != nil {
			return Report{}, 0, err
		}
		var nrev uint64
		if rev == 0 {
			nrev, err = s.kv.Create(ctx, key, data)
		} else {
			nrev, err = s.kv.Update(ctx, key, data, rev)
		}
		if isConflict(err) {
			backoff(ctx, try)
			continue
		}
		if err != nil {
			return Report{}, 0, fmt.Errorf("write %s %s: %w", natsx.RunsBucket, key, err)
		}
		return cur, nrev, nil
	}
	return Report{}, 0, fmt.Errorf("write %s %s: too many concurrent writers", natsx.RunsBucket, key)
}

// isConflict reports a compare-and-set that lost to another writer: the key
// exists (create), or its revision moved (update). A replicated stream
// reports the latter as 10164 while the other write is still in flight.
func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) ||
		errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == 10164)
}

// backoff waits a little after a lost compare-and-set, longer each time, so
// writers that collide do not collide again in lockstep.
func backoff(ctx context.Context, try int) {
	d := time.Duration(1+rand.IntN(5*(try+1))) * time.Millisecond
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// RecordRun stores the producer's summary in the run's report (keeping what
// the consumers already counted) and makes it the "last" report.
func (s *Store) RecordRun(ctx context.Context, sum Summary) (Report, error) {
	if !ValidRunID(sum.RunID) {
		return Report{}, fmt.Errorf("run id %q cannot be a report key", sum.RunID)
	}
	_, _, err := s.update(ctx, Key(sum.RunID), func(r *Report) bool { r.Summary = sum; return true })
	if err != nil {
		return Report{}, err
	}
	return s.copyToLast(ctx, sum.RunID, true)
}

// Merge adds a consumer batch to its run's report (to the dry-run part
// when b.DryRun), unless that batch was merged already.
func (s *Store) Merge(ctx context.Context, runID string, b Batch) error {
	if !ValidRunID(runID) {
		return fmt.Errorf("run id %q cannot be a report key", runID)
	}
	if b.Synced.IsZero() {
		return nil
	}
	_, _, err := s.update(ctx, Key(runID), func(r *Report) bool {
		if b.Writer != "" && r.Merged[b.Writer] >= b.Seq {
			return false // a retry of a batch that landed
		}
		r.RunID = runID
		switch {
		case !b.DryRun:
			r.Synced.Add(b.Synced)
		case r.DryRun == nil:
			d := b.Synced
			r.DryRun = &d
		default:
			r.DryRun.Add(b.Synced)
		}
		if b.Writer != "" {
			if r.Merged == nil {
				r.Merged = map[string]uint64{}
			}
			r.Merged[b.Writer] = b.Seq
		}
		return true
	})
	if err != nil {
		return err
	}
	if _, err := s.copyToLast(ctx, runID, false); err != nil {
		return fmt.Errorf("%w: %w", ErrLastStale, err)
	}
	return nil
}

// ErrLastStale says the counts were added to the run's report but "last"
// could not be brought up to date; adding them again would count twice.
var ErrLastStale = errors.New("counts recorded in the run report, but not copied to \"last\"")

// copyToLast copies run.<id> to "last": always when the producer records the
// run (newest), and for consumer updates only while "last" is that run. A
// copy never replaces one taken from a newer revision, and the producer
// copies again until run.<id> stops changing under it, so "last" ends equal
// to the run's final report whichever writer comes last.
func (s *Store) copyToLast(ctx context.Context, runID string, producer bool) (Report, error) {
	for try := range maxConflicts {
		run, runRev, err := s.get(ctx, Key(runID))
		if err != nil {
			return Report{}, err
		}
		last, lastRev, err := s.get(ctx, LastKey)
		exists := err == nil || lastRev != 0
		if err != nil && !errors.Is(err, ErrNotFound) && lastRev == 0 {
			return Report{}, err
		}
		same := exists && last.RunID == runID
		newer := exists && !same && last.Ended() && last.Started.After(run.Started)
		if same && last.Revision >= runRev || !same && (!producer || newer) {
			// Up to date; or "last" is another run, which only the
			// producer replaces, and never by an older run.
			return run, nil
		}
		run.Revision = runRev
		data, err := json.Marshal(run)
		if err != nil {
			return Report{}, err
		}
		if !exists {
			_, err = s.kv.Create(ctx, LastKey, data)
		} else {
			_, err = s.kv.Update(ctx, LastKey, data, lastRev)
		}
		if isConflict(err) {
			backoff(ctx, try)
			continue
		}
		if err != nil {
			return Report{}, fmt.Errorf("write %s %s: %w", natsx.RunsBucket, LastKey, err)
		}
		if !producer {
			return run, nil
		}
		// The producer loops: a consumer may have written run.<id> after
		// the read above but checked "last" before this copy made it the
		// run's; the next pass picks its counts up.
		if _, nowRev, err := s.get(ctx, Key(runID)); err == nil && nowRev == runRev {
			return run, nil
		}
	}
	return Report{}, fmt.Errorf("write %s %s: too many concurrent writers", natsx.RunsBucket, LastKey)
}
