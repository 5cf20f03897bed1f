package syncrun

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/deadletter"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx/natstest"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap/ozmaptest"
)

const key = "oz-secret-key"

func setup(t *testing.T, opts ...ozmaptest.Option) (*ozmaptest.Server, *Runner, jetstream.JetStream) {
	t.Helper()
	js := natstest.Start(t, natsx.DefaultTopology(), jetstream.WithPublishAsyncMaxPending(64), jetstream.WithPublishAsyncTimeout(10*time.Second))
	oz := ozmaptest.NewServer(key, opts...)
	t.Cleanup(oz.Close)
	c, err := ozmap.New(ozmap.Options{BaseURL: oz.URL, APIKey: key, PageSize: 7, MaxAttempts: 2, RetryBaseDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return oz, &Runner{OZmap: c, JS: js, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, js
}

func ozBox(id, name string, implanted bool, updated time.Time) ozmaptest.Box {
	return ozmaptest.Box{ID: id, Name: name, Implanted: implanted, Coords: []float64{-48.5, -27.5}, Lat: -27.5, Lng: -48.5,
		BoxType: "64b000000000000000000001", Project: "5d9f3ff9200141000647f814", UpdatedAt: updated}
}

func workSubjects(t *testing.T, js jetstream.JetStream) map[string]bool {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, natsx.WorkStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for subj := range info.State.Subjects {
		out[subj] = true
	}
	return out
}

func dlq(t *testing.T, js jetstream.JetStream) map[string]deadletter.Letter {
	out := map[string]deadletter.Letter{}
	if err := deadletter.Scan(context.Background(), js, func(_ uint64, l deadletter.Letter, _ []byte) bool {
		out[l.BoxID] = l
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestInProjectBoxesNeverPublishedEvenIfServerIgnoresFilter(t *testing.T) {
	oz, r, js := setup(t, ozmaptest.WithIgnoreFilter())
	for _, t := range ozmaptest.DefaultBoxTypes() {
		oz.PutBoxType(t)
	}
	now := time.Now().UTC().Truncate(time.Second)
	oz.PutBox(ozBox("000000000000000000000001", "CTO-1", true, now))
	oz.PutBox(ozBox("000000000000000000000002", "CTO-2", false, now))
	oz.PutBox(ozBox("000000000000000000000003", "CTO-3", true, now))
	s, err := r.Run(context.Background(), "run-1")
	if err != nil {
		t.Fatal(err)
	}
	if s.Read != 3 || s.Eligible != 2 || s.Published != 2 || s.Skipped[SkipInProject] != 1 {
		t.Fatalf("summary %+v", s)
	}
	subj := workSubjects(t, js)
	if !subj["ozmap.boxes.000000000000000000000001"] || subj["ozmap.boxes.000000000000000000000002"] || len(subj) != 2 {
		t.Fatalf("work stream subjects %v", subj)
	}
	// The message carries the type code resolved from /box-types.
	st, _ := js.Stream(context.Background(), natsx.WorkStream)
	m, err := st.GetLastMsgForSubject(context.Background(), "ozmap.boxes.000000000000000000000001")
	if err != nil {
		t.Fatal(err)
	}
	var msg map[string]any
	_ = json.Unmarshal(m.Data, &msg)
	if msg["type_code"] != "CTO" || msg["name"] != "CTO-1" || msg["run_id"] != "run-1" || msg["schema"] != float64(1) {
		t.Fatalf("message %s", m.Data)
	}
}

func TestDuplicateNamesLatestUpdatedWinsWhateverTheOrder(t *testing.T) {
	oz, r, js := setup(t)
	old := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	// Ids order the listing: the first-listed box loses to a later one, so
	// the producer must take an already published loser back.
	oz.PutBox(ozBox("000000000000000000000001", "CTO-DUP", true, old))
	oz.PutBox(ozBox("000000000000000000000002", "CTO-DUP", true, old.Add(time.Hour))) // winner
	oz.PutBox(ozBox("000000000000000000000003", "CTO-DUP", true, old))
	oz.PutBox(ozBox("000000000000000000000004", "CTO-OTHER", true, old))
	s, err := r.Run(context.Background(), "run-1")
	if err != nil {
		t.Fatal(err)
	}
	if s.Duplicates != 2 {
		t.Fatalf("duplicates = %d, want 2 (%+v)", s.Duplicates, s)
	}
	subj := workSubjects(t, js)
	if !subj["ozmap.boxes.000000000000000000000002"] || subj["ozmap.boxes.000000000000000000000001"] || subj["ozmap.boxes.000000000000000000000003"] {
		t.Fatalf("work stream holds %v; want only the winner 2 of CTO-DUP", subj)
	}
	letters := dlq(t, js)
	for _, loser := range []string{"000000000000000000000001", "000000000000000000000003"} {
		l, ok := letters[loser]
		if !ok || l.Kind != deadletter.KindDuplicateName || l.WinnerID != "000000000000000000000002" || l.Source != deadletter.SourceProducer {
			t.Fatalf("letter for loser %s = %+v (ok=%v)", loser, l, ok)
		}
	}
}

func TestBadRowsAreDeadLetteredAndTheRunGoesOn(t *testing.T) {
	oz, r, js := setup(t)
	now := time.Now().UTC()
	oz.PutBox(ozBox("000000000000000000000001", "CTO-1", true, now))
	oz.PutBox(ozBox("000000000000000000000002", "   ", true, now))
	far := ozBox("000000000000000000000003", "CTO-3", true, now)
	far.Coords, far.Lat, far.Lng = []float64{-48.5, -127.5}, -127.5, -48.5
	oz.PutBox(far)
	oz.SetRawRows([]json.RawMessage{
		json.RawMessage(`{"id": 42, "name": "CTO-X", "implanted": true}`),
		json.RawMessage(`{"id": "000000000000000000000005", "name": "CTO-5", "implanted": "yes"}`),
	})
	s, err := r.Run(context.Background(), "run-1")
	if err != nil {
		t.Fatal(err)
	}
	if s.Published != 1 || s.Skipped[SkipInvalid] != 4 {
		t.Fatalf("summary %+v", s)
	}
	letters := dlq(t, js)
	if len(letters) != 4 {
		t.Fatalf("letters: %+v", letters)
	}
	if l := letters["000000000000000000000002"]; l.Kind != deadletter.KindInvalidRow || l.Reason == "" {
		t.Fatalf("blank name letter: %+v", l)
	}
	// A second complete run with the rows fixed clears the old letters.
	oz.PutBox(ozBox("000000000000000000000002", "CTO-2", true, now))
	oz.SetRawRows(nil)
	far.Coords, far.Lat = []float64{-48.5, -27.5}, -27.5
	oz.PutBox(far)
	// A run limited to some projects cannot tell: it keeps them.
	r.Partial = true
	s, err = r.Run(context.Background(), "run-2-partial")
	if err != nil {
		t.Fatal(err)
	}
	if left := dlq(t, js); len(left) != 4 || s.Cleared != 0 {
		t.Fatalf("after a partial run: %d letters left, %d cleared; want 4 and 0", len(left), s.Cleared)
	}
	r.Partial = false
	s, err = r.Run(context.Background(), "run-2")
	if err != nil {
		t.Fatal(err)
	}
	if left := dlq(t, js); len(left) != 0 || s.Cleared != 4 {
		t.Fatalf("after fixing the rows: %d letters left, %d cleared; want 0 and 4", len(left), s.Cleared)
	}
}

func TestRejectedKeyStopsTheRunClearly(t *testing.T) {
	oz, _, js := setup(t)
	c, _ := ozmap.New(ozmap.Options{BaseURL: oz.URL, APIKey: "wrong-key", MaxAttempts: 1})
	r := &Runner{OZmap: c, JS: js, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	_, err := r.Run(context.Background(), "run-1")
	if !errors.Is(err, ozmap.ErrUnauthorized) {
		t.Fatalf("err = %v; want ErrUnauthorized", err)
	}
}

func TestRerunPublishesNothingTwice(t *testing.T) {
	oz, r, _ := setup(t)
	now := time.Now().UTC()
	for i, id := range []string{"000000000000000000000001", "000000000000000000000002"} {
		oz.PutBox(ozBox(id, "CTO-"+string(rune('A'+i)), true, now))
	}
	if _, err := r.Run(context.Background(), "run-1"); err != nil {
		t.Fatal(err)
	}
	s, err := r.Run(context.Background(), "run-2")
	if err != nil {
		t.Fatal(err)
	}
	if s.Published != 0 || s.Unchanged != 2 {
		t.Fatalf("rerun: %+v; want 0 published, 2 unchanged", s)
	}
	// A changed box goes through.
	b := ozBox("000000000000000000000001", "CTO-A", true, now.Add(time.Minute))
	b.Coords, b.Lat = []float64{-48.5, -27.6}, -27.6
	oz.PutBox(b)
	if s, err = r.Run(context.Background(), "run-3"); err != nil || s.Published != 1 || s.Unchanged != 1 {
		t.Fatalf("after a change: %+v, %v; want 1 published", s, err)
	}
}

// A long run logs its progress at a steady interval: pages and rows read out
// of OZmap's total, boxes published, the rate and an ETA.
func TestProgressLinesShowTotalAndETA(t *testing.T) {
	js := natstest.Start(t, natsx.DefaultTopology(), jetstream.WithPublishAsyncMaxPending(64), jetstream.WithPublishAsyncTimeout(10*time.Second))
	oz := ozmaptest.NewServer(key, ozmaptest.WithLatency(30*time.Millisecond))
	t.Cleanup(oz.Close)
	oz.PutBoxes(ozmaptest.GenerateBoxes(200, 1, ozmaptest.DefaultBoxTypes()))
	pages := &PageProgress{}
	c, err := ozmap.New(ozmap.Options{BaseURL: oz.URL, APIKey: key, PageSize: 10, OnBoxPage: pages.Page})
	if err != nil {
		t.Fatal(err)
	}
	var buf safeBuffer
	r := &Runner{OZmap: c, JS: js, Log: slog.New(slog.NewJSONHandler(&buf, nil)), Pages: pages, ProgressEvery: 100 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := r.Run(ctx, "20261203T210000Z")
	if err != nil {
		t.Fatal(err)
	}
	var lines []map[string]any
	for _, l := range bytes.Split(buf.Bytes(), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(l, &m) == nil && m["msg"] == "sync progress" {
			lines = append(lines, m)
		}
	}
	if len(lines) == 0 {
		t.Fatalf("no progress line in a %s run:\n%s", s.Finished.Sub(s.Started), buf.Bytes())
	}
	for _, l := range lines {
		if l["run_id"] == "20261203T210000Z" && l["total"] == float64(s.Read) && l["eta"] != nil && l["pages"].(float64) >= 1 && l["rows_per_second"] != nil {
			return
		}
	}
	t.Fatalf("no progress line with run id, total %d, eta, pages and rate: %v", s.Read, lines)
}

// safeBuffer is a bytes.Buffer for concurrent writers.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// A losing duplicate was taken off the work stream. When it wins later the
// same evening (the winner renamed in OZmap), it must be published again,
// although nothing in it changed: the duplicates window still remembers its
// first message.
func TestWithdrawnBoxThatWinsAgainIsRepublished(t *testing.T) {
	oz, r, js := setup(t)
	old := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	oz.PutBox(ozBox("000000000000000000000001", "CTO-DUP", true, old))
	oz.PutBox(ozBox("000000000000000000000002", "CTO-DUP", true, old.Add(time.Hour))) // wins
	if _, err := r.Run(context.Background(), "run-1"); err != nil {
		t.Fatal(err)
	}
	if workSubjects(t, js)["ozmap.boxes.000000000000000000000001"] {
		t.Fatal("the loser is still on the work stream")
	}
	oz.PutBox(ozBox("000000000000000000000002", "CTO-DUP-RENAMED", true, old.Add(2*time.Hour)))
	s, err := r.Run(context.Background(), "run-2")
	if err != nil {
		t.Fatal(err)
	}
	if !workSubjects(t, js)["ozmap.boxes.000000000000000000000001"] || s.Published != 2 {
		t.Fatalf("box 1 not republished after winning again: %+v, work stream %v", s, workSubjects(t, js))
	}
}
