// Command producer reads every eligible OZmap box and publishes one message
// per box on the OZMAP_BOXES JetStream stream, once (-once) or every day on
// SYNC_SCHEDULE in SYNC_TIMEZONE (21:00 São Paulo by default).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/producer/schedule"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/producer/syncrun"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/boxstatus"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/config"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/httpx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/runreport"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/telemetry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "producer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, lookup func(string) (string, bool), stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("producer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	once := fs.Bool("once", false, "run one sync now and exit (0 once every eligible box is acknowledged by JetStream)")
	health := fs.Bool("healthcheck", false, "check a running producer's /healthz on HTTP_ADDR and exit 0 or 1 (container health checks)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *health {
		return telemetry.HealthCheck(telemetry.HTTPAddr(lookup))
	}
	cfg, err := config.LoadProducer(ctx, lookup)
	if err != nil {
		return err
	}
	log := telemetry.NewLogger(stderr, cfg.Log.Format, cfg.Log.SlogLevel(), "producer")

	hc, err := httpx.New(cfg.OZmapTimeout, cfg.OZmapCAFile, 4)
	if err != nil {
		return fmt.Errorf("OZMAP_CA_FILE: %w", err)
	}
	metrics := telemetry.NewMetrics()
	pages := &syncrun.PageProgress{}
	oz, err := ozmap.New(ozmap.Options{
		BaseURL: cfg.OZmapURL, APIKey: cfg.OZmapAPIKey, PageSize: cfg.OZmapPageSize,
		HTTPClient: hc, MaxAttempts: cfg.OZmapMaxAttempts, Logger: log,
		ProjectIDs: cfg.ProjectIDs(), OnBoxPage: pages.Page,
		OnRequest: func(method, route string, status int, d time.Duration) {
			metrics.OZmapRequests.WithLabelValues(route, method, strconv.Itoa(status)).Observe(d.Seconds())
		},
	})
	if err != nil {
		return err
	}
	conn, err := natsx.Open(ctx, cfg.NATS, "ozmap-sytex-producer", natsx.TopologyFrom(cfg.NATS, 0), log,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
		jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return err
	}
	defer conn.Close()
	runs, err := runreport.Open(ctx, conn.JS, cfg.NATS.Replicas)
	if err != nil {
		return err
	}
	if _, err := boxstatus.Open(ctx, conn.JS, cfg.NATS.Replicas); err != nil {
		return err
	}
	p := &producer{
		runner: &syncrun.Runner{OZmap: oz, JS: conn.JS, Log: log, Status: boxstatus.NewWriter(conn.JS, log), Pages: pages,
			Partial: len(cfg.ProjectIDs()) > 0},
		runs: runs, log: log, stdout: stdout, metrics: metrics,
	}
	if ids := cfg.ProjectIDs(); len(ids) > 0 {
		log.Info("syncing only the OZmap projects in OZMAP_PROJECT_IDS", "projects", ids)
	}
	if *once {
		return p.syncOnce(ctx, syncrun.ManualRunID(time.Now()))
	}
	if err := telemetry.Serve(ctx, cfg.Log.HTTPAddr, metrics, conn.Ready, log); err != nil {
		return err
	}
	p.restoreLastSuccess(ctx)
	lock, err := natsx.Lock(ctx, conn.JS, cfg.NATS.Replicas)
	if err != nil {
		return err
	}
	d := &daemon{p: p, lock: lock, sched: schedule.Schedule{Cron: cfg.ScheduleSpec(), Location: cfg.Location()}, catchup: cfg.Catchup, log: log}
	return d.loop(ctx)
}

type producer struct {
	runner  *syncrun.Runner
	runs    *runreport.Store
	log     *slog.Logger
	stdout  io.Writer
	metrics *telemetry.Metrics
}

// syncOnce runs one sync, prints its summary line, and records it.
func (p *producer) syncOnce(ctx context.Context, runID string) error {
	p.log.Info("sync started", "run_id", runID)
	s, err := p.runner.Run(ctx, runID)
	fmt.Fprintln(p.stdout, s.String())
	p.metrics.BoxesPublished.Add(float64(s.Published))
	p.metrics.LastRunDuration.Set(s.Finished.Sub(s.Started).Seconds())
	if err == nil {
		p.metrics.LastSuccess.Set(float64(s.Finished.Unix()))
	}
	p.log.Info("sync finished", "run_id", runID, "report", s)
	if ctx.Err() != nil {
		// Stopped (SIGTERM, lost lock): leave no report, so another
		// replica or the catch-up at the next start runs it again.
		p.log.Warn("sync interrupted; not recorded, it will be run again", "run_id", runID)
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, rerr := p.runs.RecordRun(rctx, s); rerr != nil {
		p.log.Warn("could not record run report", "run_id", runID, "err", rerr)
	}
	return err
}

// reported reports whether a run with this id has ended and left its report,
// successful or not. A failed scheduled run is not retried by the other
// replicas (a wrong API key would make them take turns failing); it is in the
// report and the alerts, and the next scheduled run tries again. A run whose
// holder died leaves no report, and another replica takes it over.
func (p *producer) reported(ctx context.Context, runID string) bool {
	r, err := p.runs.Get(ctx, runID)
	return err == nil && r.Ended()
}

// restoreLastSuccess sets the last-success metric from the run reports, so a
// restarted producer does not look as if it never synced.
func (p *producer) restoreLastSuccess(ctx context.Context) {
	s, err := p.runs.Last(ctx)
	if err == nil && s.Ended() && s.Err == "" {
		p.metrics.LastSuccess.Set(float64(s.Finished.Unix()))
		p.metrics.LastRunDuration.Set(s.Finished.Sub(s.Started).Seconds())
	}
}
