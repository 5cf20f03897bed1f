package telemetry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// freeAddr returns a loopback address nobody listens on (yet).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func get(t *testing.T, ctx context.Context, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// What Prometheus and the orchestrator see: the series, liveness, and a
// readiness that follows the NATS connection.
func TestServeMetricsHealthAndReadiness(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m := NewMetrics()
	m.BoxesPublished.Add(3)
	m.Upserts.WithLabelValues("created").Inc()
	m.DeadLetters.WithLabelValues("sytex-rejected").Inc()
	m.SytexRequests.WithLabelValues("/api/networkelement/", "GET", "200").Observe(0.02)
	m.OZmapRequests.WithLabelValues("/api/v2/boxes", "GET", "200").Observe(0.1)
	m.BreakerState.Set(2)
	m.BoxesHeld.WithLabelValues("breaker-open").Add(3)
	m.LastSuccess.Set(1.7e9)
	pending, dlq := m.NewBacklogGauges()
	pending.Set(5)
	dlq.Set(1)

	var down atomic.Bool
	ready := func() error {
		if down.Load() {
			return errors.New("NATS RECONNECTING")
		}
		return nil
	}
	addr := freeAddr(t)
	if err := Serve(ctx, addr, m, ready, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("server did not start")
		case <-time.After(20 * time.Millisecond):
		}
	}

	if code, body := get(t, ctx, base+"/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	if code, _ := get(t, ctx, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz while connected = %d", code)
	}
	down.Store(true)
	if code, body := get(t, ctx, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "NATS RECONNECTING") {
		t.Fatalf("/readyz while NATS is unreachable = %d %q", code, body)
	}
	if code, _ := get(t, ctx, base+"/healthz"); code != 200 {
		t.Fatal("/healthz must stay 200 while NATS is away (a restart would not help)")
	}
	if err := HealthCheck(addr); err != nil {
		t.Fatalf("-healthcheck: %v", err)
	}

	_, body := get(t, ctx, base+"/metrics")
	for _, want := range []string{
		"ozmap_sync_boxes_published_total 3",
		`ozmap_sync_upserts_total{outcome="created"} 1`,
		`ozmap_sync_dead_letters_total{kind="sytex-rejected"} 1`,
		`ozmap_sync_sytex_request_duration_seconds_count{method="GET",route="/api/networkelement/",status="200"} 1`,
		`ozmap_sync_ozmap_request_duration_seconds_count{method="GET",route="/api/v2/boxes",status="200"} 1`,
		"ozmap_sync_breaker_state 2",
		`ozmap_sync_boxes_held{reason="breaker-open"} 3`,
		"ozmap_sync_last_success_timestamp_seconds 1.7e+09",
		"ozmap_sync_last_run_duration_seconds",
		"ozmap_sync_consumer_pending 5",
		"ozmap_sync_dlq_messages 1",
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	cancel()
	time.Sleep(100 * time.Millisecond)
	if err := HealthCheck(addr); err == nil {
		t.Error("-healthcheck passes after the server stopped")
	}
}

func TestServeRefusesABadAddress(t *testing.T) {
	err := Serve(context.Background(), "not-an-address", NewMetrics(), func() error { return nil }, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "HTTP_ADDR") {
		t.Fatalf("err = %v", err)
	}
}
