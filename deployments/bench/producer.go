package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"time"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap/ozmaptest"
)

// ProducerResult is one `producer -once` run on its own.
type ProducerResult struct {
	Boxes        int     `json:"boxes"`
	Published    int     `json:"published"`
	Seconds      float64 `json:"seconds"`       // process start → exit
	RunSeconds   float64 `json:"run_seconds"`   // the run as the producer reports it
	BoxesPerSec  float64 `json:"boxes_per_sec"` // Published / Seconds
	MaxRSSMB     float64 `json:"max_rss_mb"`    // the producer process's peak RSS (VmHWM)
	CPUPerBoxUS  float64 `json:"producer_cpu_us_per_box"`
	SummaryLine  string  `json:"summary_line"`
	OZmapPageLen int     `json:"ozmap_page_size"`
}

var summaryRE = regexp.MustCompile(`read (\d+) boxes, (\d+) eligible, (\d+) published, .* in (\S+)$`)

// runProducer fills a zero-latency OZmap simulator with n eligible boxes and
// runs the real producer once against a fresh JetStream server. Peak RSS is
// the producer process's own VmHWM (see cpuOf for why not ru_maxrss).
func runProducer(ctx context.Context, o opts, n int, seed int64) (ProducerResult, error) {
	res := ProducerResult{Boxes: n, OZmapPageLen: 500}
	env, cleanup, err := newEnv(o)
	if err != nil {
		return res, err
	}
	defer cleanup()
	types := ozmaptest.DefaultBoxTypes()
	for _, t := range types {
		env.OZmap.PutBoxType(t)
	}
	boxes := ozmaptest.GenerateBoxes(n, seed, types)
	for i := range boxes {
		boxes[i].Implanted = true
	}
	env.OZmap.PutBoxes(boxes)
	boxes = nil
	runtime.GC()

	r, err := produce(ctx, env)
	if o.verbose {
		fmt.Fprintf(os.Stderr, "--- producer log, %d boxes ---\n%s\n", n, r.Logs)
	}
	if err != nil {
		return res, err
	}
	m := summaryRE.FindStringSubmatch(r.Line)
	if m == nil {
		return res, fmt.Errorf("unexpected producer output %q", r.Line)
	}
	res.Published, _ = strconv.Atoi(m[3])
	if d, err := time.ParseDuration(m[4]); err == nil {
		res.RunSeconds = d.Seconds()
	}
	if res.Published != n {
		return res, fmt.Errorf("producer published %d boxes, want %d: %s", res.Published, n, r.Line)
	}
	res.Seconds = r.Wall.Seconds()
	res.BoxesPerSec = float64(res.Published) / res.Seconds
	res.MaxRSSMB = float64(r.Usage.MaxRSS) / (1 << 20)
	res.CPUPerBoxUS = float64(r.Usage.CPU.Microseconds()) / float64(n)
	res.SummaryLine = r.Line
	return res, nil
}
