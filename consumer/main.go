// Command consumer upserts OZmap boxes from the OZMAP_BOXES stream into
// Sytex. Run as many as you like: they share the durable consumer
// sytex-upsert. `consumer replay` moves dead-lettered boxes back to work.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/consumer/upsert"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/consumer/worker"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/config"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/httpx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
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
	cfg, err := config.LoadConsumer(ctx, lookup)
	if err != nil {
		return err
	}
	log := telemetry.NewLogger(stderr, cfg.Log.Format, cfg.Log.SlogLevel(), "consumer")
	hc, err := httpx.New(cfg.SytexTimeout, cfg.SytexCAFile, cfg.Concurrency)
	if err != nil {
		return fmt.Errorf("SYTEX_CA_FILE: %w", err)
	}
	api, err := sytex.New(sytex.Options{
		BaseURL: cfg.SytexURL, Token: cfg.SytexToken, OrganizationID: cfg.SytexOrgID,
		HTTPClient: hc, PageSize: cfg.SytexPageSize,
	})
	if err != nil {
		return err
	}
	conn, err := natsx.Open(ctx, cfg.NATS, "ozmap-sytex-consumer", natsx.TopologyFrom(cfg.NATS, cfg.AckWait), log)
	if err != nil {
		return err
	}
	defer conn.Close()
	cons, err := conn.JS.Consumer(ctx, natsx.WorkStream, natsx.UpsertConsumer)
	if err != nil {
		return fmt.Errorf("open consumer %s: %w", natsx.UpsertConsumer, err)
	}
	w := worker.New(conn.JS, cons, api, upsert.Upserter{NETypes: cfg.NETypes(), NETypeDefault: cfg.NETypeDefault}, worker.Options{
		Concurrency: cfg.Concurrency, MaxAttempts: cfg.MaxAttempts,
		RetryBase: cfg.RetryBase, RetryMax: cfg.RetryMax, AckWait: cfg.AckWait,
		ShutdownTimeout: cfg.ShutdownTimeout, PauseReplicas: true, Log: log,
		Breaker: worker.BreakerSettings{Failures: cfg.BreakerFails, OpenTimeout: cfg.BreakerOpenFor},
	})
	log.Info("consumer started", "concurrency", cfg.Concurrency, "stream", natsx.WorkStream, "consumer", natsx.UpsertConsumer)
	if err := w.Run(ctx); err != nil {
		return err
	}
	log.Info("consumer stopped")
	return nil
}
