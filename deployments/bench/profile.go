package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/consumer/upsert"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/consumer/worker"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/producer/syncrun"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/httpx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap/ozmaptest"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/rehearsal"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/scenario"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/sytex"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/telemetry"
)

// ProfileResult says where the CPU profiles are and what the profiled runs
// measured. The profiled runs are in-process (producer and consumer code
// share this process with the NATS server and the simulators), so their
// rates are not the table's: they are there to read the profiles against.
type ProfileResult struct {
	ProducerProfile string  `json:"producer_profile"`
	ProducerBoxes   int     `json:"producer_boxes"`
	ProducerPerSec  float64 `json:"producer_boxes_per_sec"`
	ConsumerProfile string  `json:"consumer_profile"`
	ConsumerBoxes   int     `json:"consumer_boxes"`
	ConsumerPerSec  float64 `json:"consumer_boxes_per_sec"`
}

// runProfiles runs the producer's sync and then two consumers' workers
// (2 × 16 in flight, each with its own NATS connection, as two processes
// would) in this process with zero simulated latency, each under the CPU
// profiler, and writes producer.pprof and consumer.pprof into dir.
func runProfiles(ctx context.Context, o opts, dir string, producerBoxes, consumerBoxes int, seed int64) (ProfileResult, error) {
	var res ProfileResult
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))

	// Producer: a fresh environment with producerBoxes eligible boxes.
	{
		env, cleanup, err := newEnv(o)
		if err != nil {
			return res, err
		}
		types := ozmaptest.DefaultBoxTypes()
		for _, t := range types {
			env.OZmap.PutBoxType(t)
		}
		boxes := ozmaptest.GenerateBoxes(producerBoxes, seed, types)
		for i := range boxes {
			boxes[i].Implanted = true
		}
		env.OZmap.PutBoxes(boxes)
		js, closeNC, err := connect(ctx, env, false, jetstream.WithPublishAsyncMaxPending(1024), jetstream.WithPublishAsyncTimeout(30*time.Second))
		if err != nil {
			cleanup()
			return res, err
		}
		hc, _ := httpx.New(60*time.Second, "", 4)
		oz, err := ozmap.New(ozmap.Options{BaseURL: env.OZmap.URL, APIKey: rehearsal.OZmapKey, PageSize: ozmap.DefaultPageSize, HTTPClient: hc, Logger: discard})
		if err != nil {
			closeNC()
			cleanup()
			return res, err
		}
		r := &syncrun.Runner{OZmap: oz, JS: js, Log: discard}
		path := filepath.Join(dir, "producer.pprof")
		start := time.Now()
		err = profiled(path, func() error {
			s, err := r.Run(ctx, "bench-profile")
			return withSummary(s, err)
		})
		elapsed := time.Since(start)
		closeNC()
		cleanup()
		if err != nil {
			return res, err
		}
		res.ProducerProfile, res.ProducerBoxes = path, producerBoxes
		res.ProducerPerSec = float64(producerBoxes) / elapsed.Seconds()
	}

	// Consumers: the realistic mix, the stream filled by the real producer.
	env, cleanup, err := newEnv(o)
	if err != nil {
		return res, err
	}
	defer cleanup()
	scenario.Seed(env.OZmap, env.Sytex, Realistic(consumerBoxes), seed)
	if _, err := produce(ctx, env); err != nil {
		return res, err
	}
	const consumers, concurrency = 2, 16
	var workers []*worker.Worker
	for range consumers {
		js, closeNC, err := connect(ctx, env, true)
		if err != nil {
			return res, err
		}
		defer closeNC()
		cons, err := js.Consumer(ctx, natsx.WorkStream, natsx.UpsertConsumer)
		if err != nil {
			return res, err
		}
		hc, _ := httpx.New(20*time.Second, "", concurrency)
		metrics := telemetry.NewMetrics()
		api, err := sytex.New(sytex.Options{
			BaseURL: env.Sytex.URL, Token: rehearsal.SytexToken, OrganizationID: rehearsal.SytexOrg, HTTPClient: hc, PageSize: sytex.DefaultPageSize,
			OnRequest: func(method, route string, status int, d time.Duration) {
				metrics.SytexRequests.WithLabelValues(route, method, strconv.Itoa(status)).Observe(d.Seconds())
			},
		})
		if err != nil {
			return res, err
		}
		workers = append(workers, worker.New(js, cons, api, upsert.Upserter{NETypes: scenario.NETypes}, worker.Options{
			Concurrency: concurrency, MaxAttempts: 10, RetryBase: 200 * time.Millisecond, RetryMax: 5 * time.Minute,
			AckWait: 60 * time.Second, ShutdownTimeout: 25 * time.Second, PauseReplicas: true, Log: discard,
			Breaker: worker.BreakerSettings{Failures: 5, OpenTimeout: 30 * time.Second},
			OnEvent: func(e worker.Event) { metrics.Upserts.WithLabelValues(string(e.Result.Outcome)).Inc() },
		}))
	}
	path := filepath.Join(dir, "consumer.pprof")
	start := time.Now()
	err = profiled(path, func() error {
		wctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for _, w := range workers {
			wg.Add(1)
			go func() { defer wg.Done(); _ = w.Run(wctx) }()
		}
		err := env.WaitIdle(ctx)
		stop()
		wg.Wait()
		return err
	})
	elapsed := time.Since(start)
	if err != nil {
		return res, err
	}
	res.ConsumerProfile, res.ConsumerBoxes = path, consumerBoxes
	res.ConsumerPerSec = float64(consumerBoxes) / elapsed.Seconds()
	return res, nil
}

func withSummary(s syncrun.Summary, err error) error {
	if err != nil {
		return err
	}
	if s.Published == 0 {
		return fmt.Errorf("profiled sync published nothing: %s", s)
	}
	return nil
}

// profiled runs f under the CPU profiler, writing the profile to path.
func profiled(path string, f func() error) error {
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := pprof.StartCPUProfile(out); err != nil {
		return err
	}
	err = f()
	pprof.StopCPUProfile()
	return err
}

// connect opens a NATS connection to the environment's server the way the
// programs do and makes sure the topology exists.
func connect(ctx context.Context, env *rehearsal.Env, ownsConsumer bool, jsOpts ...jetstream.JetStreamOpt) (jetstream.JetStream, func(), error) {
	nc, err := natsx.Connect(natsx.ConnectOptions{URL: env.Server.ClientURL(), Name: "bench"})
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc, jsOpts...)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	topo := natsx.DefaultTopology()
	topo.OwnsConsumer = ownsConsumer
	if err := natsx.EnsureTopology(ctx, js, topo); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return js, nc.Close, nil
}
