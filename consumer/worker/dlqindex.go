package worker

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/deadletter"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
)

// dlqIndex knows which boxes have a dead letter, so a box that later syncs
// fine (Sytex data fixed, next night's run) has its stale letter removed and
// the "dead letters present" alert clears by itself. It is refreshed from the
// DLQ's subject list rather than asked per box: one request per refresh, none
// per upsert.
type dlqIndex struct {
	js  jetstream.JetStream
	mu  sync.Mutex
	ids map[string]bool
}

func (x *dlqIndex) refresh(ctx context.Context) {
	s, err := x.js.Stream(ctx, natsx.DLQStream)
	if err != nil {
		return
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(natsx.DLQSubject+".>"))
	if err != nil {
		return
	}
	ids := make(map[string]bool, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		if id, ok := strings.CutPrefix(subj, natsx.DLQSubject+"."); ok {
			ids[id] = true
		}
	}
	x.mu.Lock()
	x.ids = ids
	x.mu.Unlock()
}

func (x *dlqIndex) run(ctx context.Context, every time.Duration) {
	for {
		x.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// clear removes the box's dead letter, if it has one and a consumer wrote
// it. A producer's letter (a losing duplicate name, an invalid row) stays: an
// upsert of an old message of that box proves nothing about it, and the
// producer's next complete run clears it when the box is fine. The letter is
// deleted by sequence, so one written meanwhile is never removed unread.
func (x *dlqIndex) clear(ctx context.Context, boxID string) {
	x.mu.Lock()
	has := x.ids[boxID]
	delete(x.ids, boxID)
	x.mu.Unlock()
	if !has {
		return
	}
	m, err := natsx.LeaderGetLast(ctx, x.js.Conn(), natsx.DLQStream, natsx.DLQSubject+"."+boxID)
	if err != nil || deadletter.Source(m.Header.Get(deadletter.HeaderSource)) != deadletter.SourceConsumer {
		return
	}
	if s, err := x.js.Stream(ctx, natsx.DLQStream); err == nil {
		_ = s.DeleteMsg(ctx, m.Sequence)
	}
}
