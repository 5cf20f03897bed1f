package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the Prometheus series both programs export. Labels never
// carry box names, URLs with queries, or secrets.
type Metrics struct {
	Registry        *prometheus.Registry
	BoxesPublished  prometheus.Counter
	LastSuccess     prometheus.Gauge
	LastRunDuration prometheus.Gauge
	Upserts         *prometheus.CounterVec // outcome
	DeadLetters     *prometheus.CounterVec // kind
	BreakerState    prometheus.Gauge
	SytexRequests   *prometheus.HistogramVec // route, method, status
	OZmapRequests   *prometheus.HistogramVec // route, method, status
	BoxesHeld       *prometheus.GaugeVec     // reason
}

// NewMetrics registers the series.
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{
		Registry:        r,
		BoxesPublished:  prometheus.NewCounter(prometheus.CounterOpts{Name: "ozmap_sync_boxes_published_total", Help: "Box messages stored on OZMAP_BOXES."}),
		LastSuccess:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "ozmap_sync_last_success_timestamp_seconds", Help: "End of the last successful sync run (Unix time)."}),
		LastRunDuration: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ozmap_sync_last_run_duration_seconds", Help: "Duration of the last sync run."}),
		Upserts:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ozmap_sync_upserts_total", Help: "Boxes processed by outcome."}, []string{"outcome"}),
		DeadLetters:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ozmap_sync_dead_letters_total", Help: "Boxes dead-lettered by kind."}, []string{"kind"}),
		BreakerState:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "ozmap_sync_breaker_state", Help: "Sytex circuit breaker: 0 closed, 1 half-open, 2 open."}),
		SytexRequests: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ozmap_sync_sytex_request_duration_seconds", Help: "Sytex requests.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}, []string{"route", "method", "status"}),
		OZmapRequests: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ozmap_sync_ozmap_request_duration_seconds", Help: "OZmap requests (status 0: no answer).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)}, []string{"route", "method", "status"}),
	}
	m.BoxesHeld = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ozmap_sync_boxes_held", Help: "Boxes a consumer holds without working on them, by reason (breaker-open, rate-limited, unchecked)."}, []string{"reason"})
	for _, c := range []prometheus.Collector{m.BoxesPublished, m.LastSuccess, m.LastRunDuration, m.Upserts, m.DeadLetters, m.BreakerState, m.SytexRequests, m.OZmapRequests, m.BoxesHeld} {
		f(c)
	}
	return m
}

// Serve runs /metrics, /healthz (the process is alive) and /readyz (ready
// reports nil: e.g. NATS is connected) on addr until ctx ends. An empty addr
// disables the server.
func Serve(ctx context.Context, addr string, m *Metrics, ready func() error, log *slog.Logger) error {
	if addr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("HTTP_ADDR %q: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("serving metrics and health", "addr", ln.Addr().String())
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP server stopped", "err", err)
		}
	}()
	return nil
}

// HealthCheck is the `-healthcheck` flag: GET /healthz on this machine's
// HTTP_ADDR, for container health checks in an image with no curl.
func HealthCheck(addr string) error {
	if addr == "" {
		addr = ":8080"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz: %s", resp.Status)
	}
	return nil
}

// HTTPAddr reads HTTP_ADDR for the -healthcheck path, before configuration.
func HTTPAddr(lookup func(string) (string, bool)) string {
	if v, ok := lookup("HTTP_ADDR"); ok {
		return strings.TrimSpace(v)
	}
	return ":8080"
}

// Backlog gauges, sampled by the consumers from JetStream.
var (
	pendingHelp = "Boxes waiting on sytex-upsert: pending plus unacknowledged."
	dlqHelp     = "Messages in OZMAP_BOXES_DLQ."
)

// NewBacklogGauges registers ozmap_sync_consumer_pending and
// ozmap_sync_dlq_messages on m.
func (m *Metrics) NewBacklogGauges() (pending, dlq prometheus.Gauge) {
	pending = prometheus.NewGauge(prometheus.GaugeOpts{Name: "ozmap_sync_consumer_pending", Help: pendingHelp})
	dlq = prometheus.NewGauge(prometheus.GaugeOpts{Name: "ozmap_sync_dlq_messages", Help: dlqHelp})
	m.Registry.MustRegister(pending, dlq)
	return pending, dlq
}
