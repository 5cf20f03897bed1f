package worker

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/consumer/upsert"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/sytex"
)

// BreakerSettings configure the breaker.
type BreakerSettings struct {
	Failures    int           // consecutive Sytex failures that open it
	OpenTimeout time.Duration // how long it stays open before a probe
	// OnStateChange is told of every transition (to pause the consumer for
	// every replica, to export the state as a metric).
	OnStateChange func(from, to gobreaker.State)
}

// SytexFault reports whether err is Sytex's (or the network's) fault rather
// than the box's: the class that trips the breaker and is retried.
func SytexFault(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	return !sytex.IsPermanent(err) || sytex.IsAuth(err)
}

func newBreaker(s BreakerSettings, log *slog.Logger) *gobreaker.CircuitBreaker[any] {
	return gobreaker.NewCircuitBreaker[any](gobreaker.Settings{
		Name:         "sytex",
		MaxRequests:  1, // half-open: one probe at a time
		Timeout:      s.OpenTimeout,
		ReadyToTrip:  func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(s.Failures) },
		IsSuccessful: func(err error) bool { return !SytexFault(err) },
		// Our own shutdown cancelling a call says nothing about Sytex.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			log.Warn("sytex circuit breaker changed state", "from", from.String(), "to", to.String())
			if s.OnStateChange != nil {
				s.OnStateChange(from, to)
			}
		},
	})
}

// guarded sends every Sytex call through one circuit breaker and one rate
// gate shared by all of this process's workers.
//
// The breaker counts Sytex's faults only: 5xx, 429, timeouts, connection
// errors, unusable bodies, and 401/403 (a rejected token fails every box
// alike, so it must stop the work rather than dead-letter every box). A 4xx
// about the box itself is the box's fault and counts as a success for the
// breaker; a call cut short by our own shutdown is not counted at all.
type guarded struct {
	api  upsert.Sytex
	cb   *gobreaker.CircuitBreaker[any]
	gate *rateGate
}

func call[T any](ctx context.Context, g *guarded, fn func() (T, error)) (T, error) {
	var zero T
	if err := g.gate.wait(ctx); err != nil {
		return zero, err
	}
	v, err := g.cb.Execute(func() (any, error) { return fn() })
	if err != nil {
		var ae *sytex.APIError
		if errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests {
			g.gate.delay(max(ae.RetryAfter, time.Second))
		}
		return zero, err
	}
	return v.(T), nil
}

func (g *guarded) FindByName(ctx context.Context, name string) ([]sytex.Element, error) {
	return call(ctx, g, func() ([]sytex.Element, error) { return g.api.FindByName(ctx, name) })
}

func (g *guarded) Create(ctx context.Context, r sytex.CreateRequest) (sytex.Element, error) {
	return call(ctx, g, func() (sytex.Element, error) { return g.api.Create(ctx, r) })
}

func (g *guarded) Update(ctx context.Context, id int64, p sytex.Patch) (sytex.Element, error) {
	return call(ctx, g, func() (sytex.Element, error) { return g.api.Update(ctx, id, p) })
}

// rateGate holds every worker back after Sytex answered 429, for as long as
// its Retry-After asked: one slow-down for the whole process instead of each
// worker hammering on its own.
type rateGate struct {
	mu        sync.Mutex
	notBefore time.Time
}

func (g *rateGate) delay(d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if t := time.Now().Add(d); t.After(g.notBefore) {
		g.notBefore = t
	}
}

func (g *rateGate) wait(ctx context.Context) error {
	g.mu.Lock()
	d := time.Until(g.notBefore)
	g.mu.Unlock()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
