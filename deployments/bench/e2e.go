package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/rehearsal"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/scenario"
)

// Realistic is the mix of the end-to-end cases: every box eligible, 70%
// already in Sytex and identical, 20% in Sytex with stale data, 10% new.
func Realistic(boxes int) scenario.Mix {
	return scenario.Mix{Boxes: boxes, UnchangedPct: 70, UpdatedPct: 20}
}

// Outcome classes, for requests per box.
const (
	classUnchanged = iota
	classUpdated
	classCreated
	classOther // requests about no box of the run (the breaker's probe)
	nClasses
)

var classNames = [nClasses]string{"unchanged", "updated", "created", "other"}

// requestTally counts Sytex requests by the outcome class of the box they
// were about: a search by its q (the box name), a create by the name in its
// body, a patch by the element id in its path. It is installed as the Sytex
// simulator's FailMatching rule, which sees every authenticated request and
// here never fails one.
type requestTally struct {
	byName map[string]int
	byID   map[int64]int
	n      [nClasses]struct{ search, create, update atomic.Int64 }
}

func newTally(env *rehearsal.Env, ex scenario.Expect) *requestTally {
	t := &requestTally{byName: map[string]int{}, byID: map[int64]int{}}
	for _, n := range ex.Unchanged {
		t.byName[n] = classUnchanged
	}
	for _, n := range ex.Updated {
		t.byName[n] = classUpdated
	}
	for _, n := range ex.Created {
		t.byName[n] = classCreated
	}
	for _, e := range env.Sytex.Elements() {
		if c, ok := t.byName[e.Name]; ok {
			t.byID[e.ID] = c
		}
	}
	return t
}

func (t *requestTally) class(name string) int {
	if c, ok := t.byName[name]; ok {
		return c
	}
	return classOther
}

func (t *requestTally) observe(r *http.Request) (int, string, bool) {
	switch r.Method {
	case http.MethodGet:
		if r.URL.Path == "/api/networkelement/" {
			t.n[t.class(r.URL.Query().Get("q"))].search.Add(1)
		}
	case http.MethodPost:
		var body struct {
			Name string `json:"name"`
		}
		_ = json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body)
		t.n[t.class(body.Name)].create.Add(1)
	case http.MethodPatch:
		id, _ := strconv.ParseInt(strings.Trim(strings.TrimPrefix(r.URL.Path, "/api/networkelement/"), "/"), 10, 64)
		c, ok := t.byID[id]
		if !ok {
			c = classOther
		}
		t.n[c].update.Add(1)
	}
	return 0, "", false
}

// e2eCase is one end-to-end measurement.
type e2eCase struct {
	Consumers   int
	Concurrency int
	Latency     time.Duration
	Boxes       int
}

// E2EResult is what an end-to-end case measured.
type E2EResult struct {
	Consumers     int     `json:"consumers"`
	Concurrency   int     `json:"concurrency"`
	InFlight      int     `json:"in_flight"`
	LatencyMS     float64 `json:"sytex_latency_ms"`
	Boxes         int     `json:"boxes"`
	Seconds       float64 `json:"seconds"`        // first consumer start → backlog 0
	BoxesPerSec   float64 `json:"boxes_per_sec"`  // Boxes / Seconds
	SteadyPerSec  float64 `json:"steady_per_sec"` // between 10% and 90% drained
	RequestsTotal int64   `json:"requests_total"` // Sytex requests in the case
	RequestsPer   float64 `json:"requests_per_box"`
	TheoryPerSec  float64 `json:"theory_per_sec,omitempty"` // in-flight ÷ (requests per box × latency)
	Efficiency    float64 `json:"efficiency,omitempty"`     // BoxesPerSec / TheoryPerSec
	// Requests per box by the box's outcome (realistic mix with latency).
	PerOutcome map[string]OutcomeRequests `json:"per_outcome,omitempty"`
	// CPU: consumer processes (sum), and this process (NATS server and
	// simulators), per box.
	ConsumerCPUPerBoxUS float64 `json:"consumer_cpu_us_per_box"`
	ServerCPUPerBoxUS   float64 `json:"nats_and_simulators_cpu_us_per_box"`
	ConsumerMaxRSSMB    float64 `json:"consumer_max_rss_mb"`
	Check               string  `json:"check"` // "ok" or the first problem
}

// OutcomeRequests are the Sytex requests made for boxes of one outcome.
type OutcomeRequests struct {
	Boxes    int     `json:"boxes"`
	Searches int64   `json:"searches"`
	Creates  int64   `json:"creates"`
	Updates  int64   `json:"updates"`
	PerBox   float64 `json:"requests_per_box"`
}

// runE2E seeds the realistic mix, fills the stream with `producer -once`
// (Sytex untouched), then starts the consumers and times them from the
// first consumer's start until sytex-upsert has nothing pending and nothing
// unacknowledged. The stream is full before the clock starts.
func runE2E(ctx context.Context, o opts, c e2eCase, seed int64) (E2EResult, error) {
	res := E2EResult{Consumers: c.Consumers, Concurrency: c.Concurrency, InFlight: c.Consumers * c.Concurrency,
		LatencyMS: float64(c.Latency) / float64(time.Millisecond), Boxes: c.Boxes}
	env, cleanup, err := newEnv(o)
	if err != nil {
		return res, err
	}
	defer cleanup()
	env.Extra["CONSUMER_CONCURRENCY"] = strconv.Itoa(c.Concurrency)
	ex := scenario.Seed(env.OZmap, env.Sytex, Realistic(c.Boxes), seed)
	var tally *requestTally
	if c.Latency > 0 {
		// Attribution costs a little simulator CPU per request: only
		// where latency, not CPU, is what is measured.
		tally = newTally(env, ex)
		env.Sytex.FailMatching(tally.observe)
	}
	if _, err := produce(ctx, env); err != nil {
		return res, err
	}
	backlog, err := env.Backlog(ctx)
	if err != nil {
		return res, err
	}
	if backlog != uint64(c.Boxes) {
		return res, fmt.Errorf("stream holds %d boxes for the consumers, want %d", backlog, c.Boxes)
	}
	env.Sytex.ResetCounts()
	env.Sytex.SetLatency(c.Latency)

	cpu0 := selfCPU()
	start := time.Now()
	procs := make([]*consumerProc, c.Consumers)
	errs := make([]error, c.Consumers)
	var wg sync.WaitGroup
	for i := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			procs[i], errs[i] = startConsumer(ctx, env)
		}()
	}
	wg.Wait()
	stopAll := func() (usage, error) {
		var u usage
		var first error
		for _, p := range procs {
			if p == nil {
				continue
			}
			pu, err := p.stop(30 * time.Second)
			u.CPU += pu.CPU
			u.MaxRSS = max(u.MaxRSS, pu.MaxRSS)
			if err != nil && first == nil {
				first = err
			}
		}
		return u, first
	}
	for _, err := range errs {
		if err != nil {
			_, _ = stopAll()
			return res, err
		}
	}
	// Poll the backlog; note when 10% and 90% of the boxes are done.
	hi, lo := uint64(float64(c.Boxes)*0.9), uint64(float64(c.Boxes)*0.1)
	var t10, t90 time.Time
	for {
		n, err := env.Backlog(ctx)
		now := time.Now()
		if err == nil {
			if t10.IsZero() && n <= hi {
				t10 = now
			}
			if t90.IsZero() && n <= lo {
				t90 = now
			}
			if n == 0 {
				break
			}
		}
		if ctx.Err() != nil {
			_, _ = stopAll()
			return res, fmt.Errorf("consumers did not drain %d boxes: %w", c.Boxes, ctx.Err())
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	server := selfCPU() - cpu0
	counts := env.Sytex.Counts()
	u, err := stopAll()
	if err != nil {
		return res, fmt.Errorf("consumer exit: %w", err)
	}

	res.Seconds = elapsed.Seconds()
	res.BoxesPerSec = float64(c.Boxes) / res.Seconds
	if t90.After(t10) {
		res.SteadyPerSec = 0.8 * float64(c.Boxes) / t90.Sub(t10).Seconds()
	}
	res.RequestsTotal = counts.Total
	res.RequestsPer = float64(counts.Total) / float64(c.Boxes)
	if c.Latency > 0 {
		res.TheoryPerSec = float64(res.InFlight) / (res.RequestsPer * c.Latency.Seconds())
		res.Efficiency = res.BoxesPerSec / res.TheoryPerSec
	}
	res.ConsumerCPUPerBoxUS = float64(u.CPU.Microseconds()) / float64(c.Boxes)
	res.ServerCPUPerBoxUS = float64(server.Microseconds()) / float64(c.Boxes)
	res.ConsumerMaxRSSMB = float64(u.MaxRSS) / (1 << 20)
	if tally != nil {
		env.Sytex.FailMatching(nil)
		res.PerOutcome = map[string]OutcomeRequests{}
		sizes := [nClasses]int{len(ex.Unchanged), len(ex.Updated), len(ex.Created), 0}
		for k := range nClasses {
			r := OutcomeRequests{Boxes: sizes[k], Searches: tally.n[k].search.Load(), Creates: tally.n[k].create.Load(), Updates: tally.n[k].update.Load()}
			if r.Boxes > 0 {
				r.PerBox = float64(r.Searches+r.Creates+r.Updates) / float64(r.Boxes)
			}
			if r.Boxes > 0 || r.Searches+r.Creates+r.Updates > 0 {
				res.PerOutcome[classNames[k]] = r
			}
		}
	}
	res.Check = "ok"
	if problems := ex.Check(env.Sytex); len(problems) > 0 {
		res.Check = fmt.Sprintf("%d problems, e.g. %s", len(problems), problems[0])
	}
	return res, nil
}

// newEnv starts a fresh rehearsal environment (embedded JetStream with its
// data in a temporary directory, both simulators) so no case sees another's
// stream, dedup window or Sytex state.
func newEnv(o opts) (*rehearsal.Env, func(), error) {
	dir, err := os.MkdirTemp(o.tmp, "ozmap-sytex-bench-")
	if err != nil {
		return nil, nil, err
	}
	env, err := rehearsal.Start(o.bin, dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	// The programs' defaults, not the rehearsal's small pages.
	env.Extra["OZMAP_PAGE_SIZE"] = "500"
	for k, v := range o.env {
		env.Extra[k] = v
	}
	return env, func() {
		env.Close()
		os.RemoveAll(dir)
	}, nil
}
