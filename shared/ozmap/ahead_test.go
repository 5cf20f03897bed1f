package ozmap

import (
	"context"
	"errors"
	"iter"
	"sync/atomic"
	"testing"
)

// counting is a sequence of n numbers that records how many it produced and
// whether it has ended; after n it blocks until its context ends and then
// yields the context's error, like a request that never answers.
type counting struct {
	n        int
	produced atomic.Int32
	ended    atomic.Bool
}

func (c *counting) seq(ctx context.Context) iter.Seq2[int, error] {
	return func(yield func(int, error) bool) {
		defer c.ended.Store(true)
		for i := 1; i <= c.n; i++ {
			c.produced.Add(1)
			if !yield(i, nil) {
				return
			}
		}
		<-ctx.Done()
		yield(0, ctx.Err())
	}
}

func TestAheadReadsOneAheadAndStopsCleanly(t *testing.T) {
	c := &counting{n: 10}
	got := 0
	for v, err := range ahead(context.Background(), c.seq) {
		if err != nil {
			t.Fatal(err)
		}
		got++
		if v != got {
			t.Fatalf("element %d is %d", got, v)
		}
		// While the caller holds element v, at most v+1 were produced.
		if p := int(c.produced.Load()); p > v+1 {
			t.Fatalf("holding element %d, %d produced: more than one ahead", v, p)
		}
		if v == 5 {
			break
		}
	}
	if !c.ended.Load() {
		t.Fatal("the producing goroutine still runs after the loop stopped")
	}
}

func TestAheadCancelsBlockedProducerOnStop(t *testing.T) {
	// The producer is blocked "fetching" element 3 when the caller stops:
	// ahead must cancel it and wait for it.
	c := &counting{n: 2}
	for v := range ahead(context.Background(), c.seq) {
		if v == 2 {
			break
		}
	}
	if !c.ended.Load() {
		t.Fatal("the producing goroutine still runs after the loop stopped")
	}
}

func TestAheadDeliversCancellation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := &counting{n: 1}
	var last error
	n := 0
	for _, err := range ahead(ctx, c.seq) {
		n++
		if err != nil {
			last = err
			continue
		}
		cancel()
	}
	if !errors.Is(last, context.Canceled) || n != 2 {
		t.Fatalf("after cancel: %d elements, last error %v; want the element, then context.Canceled", n, last)
	}
	if !c.ended.Load() {
		t.Fatal("the producing goroutine still runs")
	}
}

func TestAheadRunsToTheEnd(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seq := func(ctx context.Context) iter.Seq2[int, error] {
		return func(yield func(int, error) bool) {
			for i := range 100 {
				if !yield(i, nil) {
					return
				}
			}
		}
	}
	sum := 0
	for v, err := range ahead(ctx, seq) {
		if err != nil {
			t.Fatal(err)
		}
		sum += v
	}
	if sum != 4950 {
		t.Fatalf("sum %d, want 4950", sum)
	}
}
