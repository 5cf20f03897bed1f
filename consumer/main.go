// Command consumer upserts OZmap boxes from the OZMAP_BOXES stream into
// Sytex. Run as many as you like: they share the durable consumer
// sytex-upsert. `consumer replay` moves dead-lettered boxes back to work.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sony/gobreaker/v2"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/consumer/outcomes"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/consumer/upsert"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/consumer/worker"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/boxstatus"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/config"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/httpx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/runreport"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/sytex"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/telemetry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, lookup func(string) (string, bool), stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "replay" {
		return runReplay(ctx, args[1:], lookup, stdout, stderr)
	}
	fs := flag.NewFlagSet("consumer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	health := fs.Bool("healthcheck", false, "check a running consumer's /healthz on HTTP_ADDR and exit 0 or 1 (container health checks)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: consumer [-healthcheck]     upsert boxes from OZMAP_BOXES into Sytex until SIGTERM")
		fmt.Fprintln(stderr, "       consumer replay -h           move dead letters (or a past sync) back to work")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *health {
		return telemetry.HealthCheck(telemetry.HTTPAddr(lookup))
	}
	cfg, err := config.LoadConsumer(ctx, lookup)
	if err != nil {
		return err
	}
	log := telemetry.NewLogger(stderr, cfg.Log.Format, cfg.Log.SlogLevel(), "consumer")
	hc, err := httpx.New(cfg.SytexTimeout, cfg.SytexCAFile, cfg.Concurrency)
	if err != nil {
		return fmt.Errorf("SYTEX_CA_FILE: %w", err)
	}
	metrics := telemetry.NewMetrics()
	api, err := sytex.New(sytex.Options{
		BaseURL: cfg.SytexURL, Token: cfg.SytexToken, OrganizationID: cfg.SytexOrgID,
		HTTPClient: hc, PageSize: cfg.SytexPageSize,
		OnRequest: func(method, route string, status int, d time.Duration) {
			metrics.SytexRequests.WithLabelValues(route, method, strconv.Itoa(status)).Observe(d.Seconds())
		},
	})
	if err != nil {
		return err
	}
	conn, err := natsx.Open(ctx, cfg.NATS, "ozmap-sytex-consumer", natsx.TopologyFrom(cfg.NATS, cfg.AckWait), log,
		jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return err
	}
	defer conn.Close()
	runs, err := runreport.Open(ctx, conn.JS, cfg.NATS.Replicas)
	if err != nil {
		return err
	}
	statuses, err := boxstatus.Open(ctx, conn.JS, cfg.NATS.Replicas)
	if err != nil {
		return err
	}
	rec := &outcomes.Recorder{Status: boxstatus.NewWriter(conn.JS, log), Runs: runs, DryRun: cfg.DryRun, Log: log}
	cons, err := conn.JS.Consumer(ctx, natsx.WorkStream, natsx.UpsertConsumer)
	if err != nil {
		return fmt.Errorf("open consumer %s: %w", natsx.UpsertConsumer, err)
	}
	w := worker.New(conn.JS, cons, api, upsert.Upserter{NETypes: cfg.NETypes(), NETypeDefault: cfg.NETypeDefault, DryRun: cfg.DryRun}, worker.Options{
		Concurrency: cfg.Concurrency, MaxAttempts: cfg.MaxAttempts,
		RetryBase: cfg.RetryBase, RetryMax: cfg.RetryMax, AckWait: cfg.AckWait,
		ShutdownTimeout: cfg.ShutdownTimeout, PauseReplicas: true, Log: log,
		OnHold: func(reason string, delta int) { metrics.BoxesHeld.WithLabelValues(reason).Add(float64(delta)) },
		PriorAttempts: func(ctx context.Context, id string, seq uint64) (int, bool) {
			return boxstatus.PriorAttempts(ctx, statuses, id, seq)
		},
		Breaker: worker.BreakerSettings{Failures: cfg.BreakerFails, OpenTimeout: cfg.BreakerOpenFor,
			OnStateChange: func(_, to gobreaker.State) { metrics.BreakerState.Set(float64(to)) }},
		OnEvent: func(e worker.Event) {
			rec.Record(e)
			switch {
			case e.Kind != "":
				metrics.Upserts.WithLabelValues("dead_lettered").Inc()
				metrics.DeadLetters.WithLabelValues(string(e.Kind)).Inc()
			case e.Retried:
				metrics.Upserts.WithLabelValues("retried").Inc()
			default:
				metrics.Upserts.WithLabelValues(string(e.Result.Outcome)).Inc()
			}
		},
	})
	if err := telemetry.Serve(ctx, cfg.Log.HTTPAddr, metrics, conn.Ready, log); err != nil {
		return err
	}
	go sampleBacklog(ctx, conn, metrics)
	// The recorder stops with the worker, not only with ctx: a worker that
	// fails at start must not leave the process waiting for it.
	rctx, stopRec := context.WithCancel(ctx)
	defer stopRec()
	recDone := make(chan struct{})
	go func() { rec.Run(rctx, reportEvery); close(recDone) }()
	if cfg.DryRun {
		log.Warn("CONSUMER_DRY_RUN is on: computing outcomes, writing nothing to Sytex")
	}
	log.Info("consumer started", "concurrency", cfg.Concurrency, "stream", natsx.WorkStream, "consumer", natsx.UpsertConsumer, "dry_run", cfg.DryRun)
	err = w.Run(ctx)
	// Record the last counts and statuses before the connection closes.
	stopRec()
	<-recDone
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	rec.Flush(fctx)
	cancel()
	if err != nil {
		return err
	}
	log.Info("consumer stopped")
	return nil
}

// reportEvery is how often a consumer merges its counts into the run reports.
const reportEvery = 5 * time.Second

// sampleBacklog exports the JetStream backlog and the DLQ size every 15 s.
func sampleBacklog(ctx context.Context, conn *natsx.Conn, m *telemetry.Metrics) {
	pending, dlq := m.NewBacklogGauges()
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		if c, err := conn.JS.Consumer(ctx, natsx.WorkStream, natsx.UpsertConsumer); err == nil {
			if info, err := c.Info(ctx); err == nil {
				pending.Set(float64(info.NumPending) + float64(info.NumAckPending))
			}
		}
		if s, err := conn.JS.Stream(ctx, natsx.DLQStream); err == nil {
			if info, err := s.Info(ctx); err == nil {
				dlq.Set(float64(info.State.Msgs))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
