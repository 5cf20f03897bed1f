package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Estimate is the 500k-box nightly run, computed from measured rates.
type Estimate struct {
	Boxes        int     `json:"boxes"`
	Consumers    int     `json:"consumers"`
	Concurrency  int     `json:"concurrency"`
	LatencyMS    float64 `json:"sytex_latency_ms"`
	BasedOn      string  `json:"based_on"`
	LatencyBound float64 `json:"latency_bound_per_sec"` // efficiency × in-flight ÷ (requests per box × latency)
	CPUBound     float64 `json:"cpu_bound_per_sec"`     // measured zero-latency throughput on this machine
	Rate         float64 `json:"consumers_per_sec"`     // the lower of the two
	ConsumerSecs float64 `json:"consumers_seconds"`
	ProducerSecs float64 `json:"producer_seconds"`
	TotalSecs    float64 `json:"total_seconds"` // the producer publishes while the consumers drain: the longer of the two
}

// Target is one goal of issue 5 and where this run stands.
type Target struct {
	Name     string `json:"name"`
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	Status   string `json:"status"` // "met", "missed", "not measured"
}

func findE2E(rs []E2EResult, consumers, concurrency int) *E2EResult {
	for i := range rs {
		if rs[i].Consumers == consumers && rs[i].Concurrency == concurrency {
			return &rs[i]
		}
	}
	return nil
}

func bestRate(rs []E2EResult) float64 {
	best := 0.0
	for _, r := range rs {
		best = max(best, r.BoxesPerSec)
	}
	return best
}

func estimate(r *Report, latency time.Duration) *Estimate {
	base := findE2E(r.E2E, 2, 16)
	if base == nil && len(r.E2E) > 0 {
		base = &r.E2E[len(r.E2E)-1]
	}
	if base == nil || len(r.Producer) == 0 {
		return nil
	}
	e := &Estimate{Boxes: 500_000, Consumers: 4, Concurrency: 16, LatencyMS: float64(latency) / float64(time.Millisecond),
		BasedOn: fmt.Sprintf("efficiency and requests/box of %d×%d, best zero-latency throughput, producer rate at %d boxes", base.Consumers, base.Concurrency, r.Producer[len(r.Producer)-1].Boxes)}
	e.LatencyBound = base.Efficiency * float64(e.Consumers*e.Concurrency) / (base.RequestsPer * latency.Seconds())
	e.CPUBound = bestRate(r.Overhead)
	e.Rate = e.LatencyBound
	if e.CPUBound > 0 {
		e.Rate = min(e.Rate, e.CPUBound)
	}
	e.ConsumerSecs = float64(e.Boxes) / e.Rate
	e.ProducerSecs = float64(e.Boxes) / r.Producer[len(r.Producer)-1].BoxesPerSec
	e.TotalSecs = max(e.ConsumerSecs, e.ProducerSecs)
	return e
}

func status(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

// perOutcome sums requests per box by outcome over every case with latency.
func perOutcome(rs []E2EResult) map[string]OutcomeRequests {
	out := map[string]OutcomeRequests{}
	for _, r := range rs {
		for k, v := range r.PerOutcome {
			a := out[k]
			a.Boxes += v.Boxes
			a.Searches += v.Searches
			a.Creates += v.Creates
			a.Updates += v.Updates
			out[k] = a
		}
	}
	for k, a := range out {
		if a.Boxes > 0 {
			a.PerBox = float64(a.Searches+a.Creates+a.Updates) / float64(a.Boxes)
		}
		out[k] = a
	}
	return out
}

func targets(r *Report) []Target {
	var ts []Target
	notMeasured := func(name, goal string) {
		ts = append(ts, Target{Name: name, Goal: goal, Measured: "-", Status: "not measured"})
	}
	base := findE2E(r.E2E, 2, 16)
	if base != nil {
		ts = append(ts, Target{Name: "efficiency 2×16 @ latency", Goal: "≥ 90% of in-flight ÷ (requests/box × latency)",
			Measured: fmt.Sprintf("%.1f%% (%.0f of %.0f boxes/s)", 100*base.Efficiency, base.BoxesPerSec, base.TheoryPerSec), Status: status(base.Efficiency >= 0.9)})
	} else {
		notMeasured("efficiency 2×16 @ latency", "≥ 90% of in-flight ÷ (requests/box × latency)")
	}
	if base != nil && r.Naive != nil {
		x := base.BoxesPerSec / r.Naive.BoxesPerSec
		ts = append(ts, Target{Name: "speed-up over naive", Goal: "2×16 ≥ 25× the sequential loop",
			Measured: fmt.Sprintf("%.1f× (%.0f vs %.1f boxes/s)", x, base.BoxesPerSec, r.Naive.BoxesPerSec), Status: status(x >= 25)})
	} else {
		notMeasured("speed-up over naive", "2×16 ≥ 25× the sequential loop")
	}
	if po := perOutcome(r.E2E); len(po) > 0 {
		u, up, c := po["unchanged"], po["updated"], po["created"]
		ok := u.PerBox <= 1 && up.PerBox <= 2 && c.PerBox <= 2
		ts = append(ts, Target{Name: "Sytex requests per box", Goal: "unchanged 1, updated 2, created 2",
			Measured: fmt.Sprintf("unchanged %.3f, updated %.3f, created %.3f", u.PerBox, up.PerBox, c.PerBox), Status: status(ok)})
	} else {
		notMeasured("Sytex requests per box", "unchanged 1, updated 2, created 2")
	}
	var p100k, p1m *ProducerResult
	for i := range r.Producer {
		switch r.Producer[i].Boxes {
		case 100_000:
			p100k = &r.Producer[i]
		case 1_000_000:
			p1m = &r.Producer[i]
		}
	}
	if p100k != nil && p1m != nil {
		g := p1m.MaxRSSMB/p100k.MaxRSSMB - 1
		ts = append(ts, Target{Name: "producer peak RSS 100k → 1M", Goal: "grows < 20%",
			Measured: fmt.Sprintf("%+.0f%% (%.0f → %.0f MB)", 100*g, p100k.MaxRSSMB, p1m.MaxRSSMB), Status: status(g < 0.2)})
	} else {
		notMeasured("producer peak RSS 100k → 1M", "grows < 20% (needs the full run)")
	}
	if len(r.Producer) > 0 {
		minRate, at := 0.0, 0
		for _, p := range r.Producer {
			if p.Boxes >= 100_000 && (minRate == 0 || p.BoxesPerSec < minRate) {
				minRate, at = p.BoxesPerSec, p.Boxes
			}
		}
		if minRate == 0 {
			last := r.Producer[len(r.Producer)-1]
			minRate, at = last.BoxesPerSec, last.Boxes
		}
		ts = append(ts, Target{Name: "producer publish rate", Goal: "≥ 30,000 boxes/s (slowest run of ≥ 100k boxes)",
			Measured: fmt.Sprintf("%.0f boxes/s at %s boxes", minRate, thousands(at)), Status: status(minRate >= 30000)})
	} else {
		notMeasured("producer publish rate", "≥ 30,000 boxes/s")
	}
	if best := bestRate(r.Overhead); best > 0 {
		ts = append(ts, Target{Name: "pipeline overhead", Goal: "≥ 3,000 boxes/s end to end, zero latency",
			Measured: fmt.Sprintf("%.0f boxes/s", best), Status: status(best >= 3000)})
	} else {
		notMeasured("pipeline overhead", "≥ 3,000 boxes/s end to end, zero latency")
	}
	return ts
}

func thousands(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func printReport(w io.Writer, r *Report) {
	fmt.Fprintf(w, "ozmap-sytex-sync benchmark  %s  %d CPUs  %s  load %s → %s  (%.0fs%s)\n",
		r.Started.Format(time.RFC3339), r.CPUs, r.GoVersion, r.LoadBefore, r.LoadAfter, r.Seconds, map[bool]string{true: ", -quick"}[r.Quick])
	tw := func() *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight) }
	naive := 0.0
	if r.Naive != nil {
		naive = r.Naive.BoxesPerSec
	}
	if len(r.E2E) > 0 {
		fmt.Fprintf(w, "\n1. End to end, realistic mix (70%% unchanged, 20%% updated, 10%% new), Sytex latency %gms\n", r.LatencyMS)
		fmt.Fprintln(w, "   clock: first consumer process start (stream already full) → sytex-upsert 0 pending, 0 unacked")
		t := tw()
		fmt.Fprintln(t, "consumers×in-flight\tboxes\tseconds\tboxes/s\tsteady/s\treq/box\ttheory/s\tefficiency\t× naive\tconsumer CPU µs/box\tcheck\t")
		for _, e := range r.E2E {
			x := "-"
			if naive > 0 {
				x = fmt.Sprintf("%.1f×", e.BoxesPerSec/naive)
			}
			fmt.Fprintf(t, "%d×%d\t%d\t%.1f\t%.0f\t%.0f\t%.3f\t%.0f\t%.1f%%\t%s\t%.0f\t%s\t\n",
				e.Consumers, e.Concurrency, e.Boxes, e.Seconds, e.BoxesPerSec, e.SteadyPerSec, e.RequestsPer, e.TheoryPerSec, 100*e.Efficiency, x, e.ConsumerCPUPerBoxUS, e.Check)
		}
		t.Flush()
		fmt.Fprintln(w, "   theory = in-flight ÷ (measured requests/box × latency); efficiency = boxes/s ÷ theory; steady = rate between 10% and 90% drained")
	}
	if r.Naive != nil {
		n := r.Naive
		fmt.Fprintf(w, "\n2. Naive sequential sync (one loop: page OZmap, search Sytex, write; same clients and simulators), latency %gms\n", n.LatencyMS)
		fmt.Fprintf(w, "   %d boxes in %.1fs: %.1f boxes/s, %.3f requests/box, check %s", n.Boxes, n.Seconds, n.BoxesPerSec, n.RequestsPer, n.Check)
		if b := findE2E(r.E2E, 2, 16); b != nil {
			fmt.Fprintf(w, "; pipeline 2×16 is %.1f× faster", b.BoxesPerSec/n.BoxesPerSec)
		}
		fmt.Fprintln(w)
	}
	if po := perOutcome(r.E2E); len(po) > 0 {
		fmt.Fprintln(w, "\n3. Sytex requests per box by outcome (all end-to-end cases above, counted by the simulator per request)")
		t := tw()
		fmt.Fprintln(t, "outcome\tboxes\tsearches\tcreates\tupdates\trequests/box\t")
		for _, k := range classNames {
			a, ok := po[k]
			if !ok {
				continue
			}
			fmt.Fprintf(t, "%s\t%d\t%d\t%d\t%d\t%.3f\t\n", k, a.Boxes, a.Searches, a.Creates, a.Updates, a.PerBox)
		}
		t.Flush()
	}
	if len(r.Producer) > 0 {
		fmt.Fprintln(w, "\n4. Producer alone (producer -once, zero-latency OZmap simulator, OZMAP_PAGE_SIZE=500, fresh stream)")
		t := tw()
		fmt.Fprintln(t, "boxes\tseconds\tboxes/s\tpeak RSS MB\tCPU µs/box\t")
		for _, p := range r.Producer {
			fmt.Fprintf(t, "%s\t%.2f\t%.0f\t%.1f\t%.1f\t\n", thousands(p.Boxes), p.Seconds, p.BoxesPerSec, p.MaxRSSMB, p.CPUPerBoxUS)
		}
		t.Flush()
		fmt.Fprintln(w, "   seconds: process start → exit; peak RSS: the producer process's VmHWM (/proc/<pid>/status, sampled every 10 ms)")
	}
	if len(r.Overhead) > 0 {
		fmt.Fprintln(w, "\n5. Pipeline overhead: end to end with zero simulated latency (same clock as 1)")
		t := tw()
		fmt.Fprintln(t, "consumers×in-flight\tboxes\tseconds\tboxes/s\tsteady/s\treq/box\tconsumer CPU µs/box\tNATS+simulators CPU µs/box\tcheck\t")
		for _, e := range r.Overhead {
			fmt.Fprintf(t, "%d×%d\t%d\t%.1f\t%.0f\t%.0f\t%.3f\t%.0f\t%.0f\t%s\t\n",
				e.Consumers, e.Concurrency, e.Boxes, e.Seconds, e.BoxesPerSec, e.SteadyPerSec, e.RequestsPer, e.ConsumerCPUPerBoxUS, e.ServerCPUPerBoxUS, e.Check)
		}
		t.Flush()
	}
	if e := r.Estimate; e != nil {
		fmt.Fprintf(w, "\nEstimate (computed, not measured): nightly run of %s boxes, %d consumers × %d in flight, latency %gms\n",
			thousands(e.Boxes), e.Consumers, e.Concurrency, e.LatencyMS)
		fmt.Fprintf(w, "   consumers ≈ %.0f boxes/s = min(latency bound %.0f, this machine's zero-latency throughput %.0f) → %s;\n",
			e.Rate, e.LatencyBound, e.CPUBound, (time.Duration(e.ConsumerSecs) * time.Second).String())
		fmt.Fprintf(w, "   producer ≈ %s, publishing while the consumers drain → run ≈ %s\n",
			(time.Duration(e.ProducerSecs*1000) * time.Millisecond).Round(time.Second).String(), (time.Duration(e.TotalSecs) * time.Second).String())
		fmt.Fprintf(w, "   (%s)\n", e.BasedOn)
	}
	if len(r.Targets) > 0 {
		fmt.Fprintln(w, "\nTargets")
		t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, x := range r.Targets {
			fmt.Fprintf(t, "  %s\t%s\t%s\t%s\n", strings.ToUpper(x.Status), x.Name, x.Goal, x.Measured)
		}
		t.Flush()
	}
	if p := r.Profile; p != nil {
		fmt.Fprintf(w, "\nCPU profiles (in process, zero latency): %s (%d boxes, %.0f/s), %s (%d boxes, %.0f/s); read with go tool pprof -top\n",
			p.ProducerProfile, p.ProducerBoxes, p.ProducerPerSec, p.ConsumerProfile, p.ConsumerBoxes, p.ConsumerPerSec)
	}
}
