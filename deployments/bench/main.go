// Command bench is `make bench`: it measures the pipeline on this machine and
// prints one table (and writes it as JSON, for comparing runs).
//
// Every case starts a fresh embedded JetStream server (data in a temporary
// directory) and fresh OZmap and Sytex simulators in this process, and runs
// the real bin/producer and bin/consumer as subprocesses against them, with
// the simulated Sytex latency of the case. It measures:
//
//  1. end-to-end throughput for the realistic mix (70% unchanged, 20%
//     updated, 10% new) at 20 ms per Sytex request, for 1 and 2 consumer
//     processes and several CONSUMER_CONCURRENCY settings, against the
//     theoretical maximum in-flight ÷ (requests per box × latency);
//  2. the same work done by a naive sequential loop (same clients, same
//     simulators), and the speed-up;
//  3. Sytex requests per box by outcome (unchanged, updated, created);
//  4. the producer alone: boxes published per second and peak RSS for
//     10k, 100k and 1M boxes from a zero-latency OZmap simulator;
//  5. pipeline overhead: end-to-end throughput with zero latency.
//
// It then estimates a 500k-box nightly run with 4 consumers × 16 in flight
// from the measured rates, and says where each target of issue 5 stands.
// With -profile DIR it also runs the producer and two consumers' workers in
// this process under the CPU profiler (zero latency) and writes
// DIR/producer.pprof and DIR/consumer.pprof.
//
// Nothing printed is made up: every number comes from this run, except the
// 500k estimate, which is computed from them and labelled as such.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// opts are the command-line settings.
type opts struct {
	bin     string
	out     string
	tmp     string
	quick   bool
	latency time.Duration
	profile string
	only    map[string]bool
	seed    int64
	env     envFlag // extra environment for the programs (GOGC, GODEBUG...)
	verbose bool
}

// envFlag collects repeated -env KEY=VALUE flags.
type envFlag map[string]string

func (e *envFlag) String() string { return fmt.Sprint(map[string]string(*e)) }

func (e *envFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", v)
	}
	if *e == nil {
		*e = envFlag{}
	}
	(*e)[k] = val
	return nil
}

// Report is the whole run, as written to the JSON file.
type Report struct {
	Started      time.Time        `json:"started"`
	Seconds      float64          `json:"seconds"`
	Quick        bool             `json:"quick"`
	CPUs         int              `json:"cpus"`
	GoVersion    string           `json:"go_version"`
	LoadBefore   string           `json:"loadavg_before"`
	LoadAfter    string           `json:"loadavg_after"`
	LatencyMS    float64          `json:"sytex_latency_ms"`
	E2E          []E2EResult      `json:"e2e"`
	Naive        *NaiveResult     `json:"naive,omitempty"`
	Producer     []ProducerResult `json:"producer"`
	Overhead     []E2EResult      `json:"overhead"`
	Estimate     *Estimate        `json:"estimate_500k,omitempty"`
	Targets      []Target         `json:"targets"`
	Profile      *ProfileResult   `json:"profile,omitempty"`
	TimingMethod string           `json:"timing_method"`
}

// plan is the sizes of one run.
type plan struct {
	e2e           [][2]int // consumers, concurrency
	e2eSeconds    float64  // target duration of each 20 ms case
	e2eMin        int
	e2eMax        int
	naive         int
	producer      []int
	overhead      [][2]int
	overheadBoxes int
	profProducer  int
	profConsumer  int
}

var (
	fullPlan = plan{
		e2e:        [][2]int{{1, 8}, {1, 16}, {1, 32}, {2, 8}, {2, 16}, {2, 32}},
		e2eSeconds: 20, e2eMin: 3000, e2eMax: 30000,
		naive:         500,
		producer:      []int{10_000, 100_000, 1_000_000},
		overhead:      [][2]int{{1, 16}, {2, 16}},
		overheadBoxes: 30000,
		profProducer:  200_000, profConsumer: 30000,
	}
	quickPlan = plan{
		e2e:        [][2]int{{1, 16}, {2, 16}},
		e2eSeconds: 3, e2eMin: 1000, e2eMax: 5000,
		naive:         100,
		producer:      []int{10_000, 30_000, 100_000},
		overhead:      [][2]int{{2, 16}},
		overheadBoxes: 5000,
		profProducer:  50_000, profConsumer: 5000,
	}
)

// assumedRequestsPerBox sizes the 20 ms cases before they run (the
// realistic mix's 1.3); the table uses the measured value.
const assumedRequestsPerBox = 1.3

func main() {
	var o opts
	var only string
	flag.StringVar(&o.bin, "bin", "bin", "directory holding the producer and consumer binaries (make build)")
	flag.StringVar(&o.out, "out", "bin/bench.json", "write the results as JSON here (empty: do not write)")
	flag.StringVar(&o.tmp, "tmp", "", "directory for the JetStream data of each case (default: the system temporary directory)")
	flag.BoolVar(&o.quick, "quick", false, "small sizes: a run of about a minute, to check the harness (numbers are noisier)")
	flag.DurationVar(&o.latency, "latency", 20*time.Millisecond, "simulated Sytex latency per request for the end-to-end and naive cases")
	flag.StringVar(&o.profile, "profile", "", "also write CPU profiles of in-process producer and consumer runs at zero latency into this directory")
	flag.StringVar(&only, "only", "", "comma-separated sections to run: e2e,naive,producer,overhead (default: all)")
	flag.Int64Var(&o.seed, "seed", 42, "seed of the generated boxes")
	flag.Var(&o.env, "env", "KEY=VALUE added to the programs' environment, e.g. -env GOGC=200 (repeatable)")
	flag.BoolVar(&o.verbose, "v", false, "print the producer's log lines of each producer-alone run")
	flag.Parse()
	if only != "" {
		o.only = map[string]bool{}
		for _, s := range strings.Split(only, ",") {
			o.only[strings.TrimSpace(s)] = true
		}
	}
	o.bin, _ = filepath.Abs(o.bin)
	for _, b := range []string{"producer", "consumer"} {
		if _, err := os.Stat(filepath.Join(o.bin, b)); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %s/%s not found: run make build first\n", o.bin, b)
			os.Exit(1)
		}
	}
	if err := bench(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func (o opts) runs(section string) bool { return o.only == nil || o.only[section] }

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func bench(o opts) error {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	p := fullPlan
	if o.quick {
		p = quickPlan
	}
	t0 := time.Now()
	r := &Report{
		Started: t0.UTC(), Quick: o.quick, CPUs: runtime.NumCPU(), GoVersion: runtime.Version(),
		LoadBefore: loadavg(), LatencyMS: float64(o.latency) / float64(time.Millisecond),
		TimingMethod: "end to end: producer -once fills the stream first (Sytex untouched); the clock runs from the first consumer process's start until sytex-upsert has 0 pending and 0 unacknowledged",
	}
	progress := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "[%s] "+format+"\n", append([]any{time.Since(t0).Round(time.Second)}, a...)...)
	}

	if o.runs("e2e") {
		for _, c := range p.e2e {
			inFlight := c[0] * c[1]
			theory := float64(inFlight) / (assumedRequestsPerBox * o.latency.Seconds())
			n := int(theory*p.e2eSeconds/1000+0.5) * 1000
			n = min(max(n, p.e2eMin), p.e2eMax)
			progress("end to end: %d consumer(s) × %d in flight, %d boxes, Sytex latency %s", c[0], c[1], n, o.latency)
			res, err := runE2E(ctx, o, e2eCase{Consumers: c[0], Concurrency: c[1], Latency: o.latency, Boxes: n}, o.seed)
			if err != nil {
				return fmt.Errorf("end to end %d×%d: %w", c[0], c[1], err)
			}
			r.E2E = append(r.E2E, res)
		}
	}
	if o.runs("naive") {
		progress("naive sequential sync: %d boxes, Sytex latency %s", p.naive, o.latency)
		res, err := runNaive(ctx, o, p.naive, o.latency, o.seed)
		if err != nil {
			return fmt.Errorf("naive: %w", err)
		}
		r.Naive = &res
	}
	if o.runs("producer") {
		for _, n := range p.producer {
			progress("producer alone: %d boxes", n)
			res, err := runProducer(ctx, o, n, o.seed)
			if err != nil {
				return fmt.Errorf("producer %d: %w", n, err)
			}
			r.Producer = append(r.Producer, res)
		}
	}
	if o.runs("overhead") {
		for _, c := range p.overhead {
			progress("pipeline overhead: %d consumer(s) × %d in flight, %d boxes, zero latency", c[0], c[1], p.overheadBoxes)
			res, err := runE2E(ctx, o, e2eCase{Consumers: c[0], Concurrency: c[1], Boxes: p.overheadBoxes}, o.seed)
			if err != nil {
				return fmt.Errorf("overhead %d×%d: %w", c[0], c[1], err)
			}
			r.Overhead = append(r.Overhead, res)
		}
	}
	if o.profile != "" {
		progress("CPU profiles (in process, zero latency) into %s", o.profile)
		res, err := runProfiles(ctx, o, o.profile, p.profProducer, p.profConsumer, o.seed)
		if err != nil {
			return fmt.Errorf("profile: %w", err)
		}
		r.Profile = &res
	}
	r.Seconds = time.Since(t0).Seconds()
	r.LoadAfter = loadavg()
	r.Estimate = estimate(r, o.latency)
	r.Targets = targets(r)

	printReport(os.Stdout, r)
	if o.out != "" {
		if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
			return err
		}
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.out, append(b, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Printf("\nwritten: %s\n", o.out)
	}
	return nil
}
