package deadletter

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/box"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx/natstest"
)

const id = "5da61d35493d9c0006665404"

func TestHeadersRoundTripAndStayReadable(t *testing.T) {
	l := Letter{Kind: KindRejected, Source: SourceConsumer, Reason: "Sytex rejected the box", HTTPStatus: 400,
		ErrorText: `{"code": ["not allowed"]}`, Attempts: 2, Subject: "ozmap.boxes." + id, StreamSeq: 42,
		BoxID: id, BoxName: "CTO-1", RunID: "20261203T210000Z", Time: time.Date(2026, 12, 3, 21, 0, 1, 5, time.UTC)}
	if got := FromHeaders(l.Headers()); got != l {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, l)
	}
	// Sytex's error text can be long and multi-line: one bounded line.
	l.ErrorText = strings.Repeat("é", 3000) + "\r\nsecond line"
	h := l.Headers().Get(HeaderError)
	if strings.ContainsAny(h, "\r\n") || utf8.RuneCountInString(h) > MaxHeaderValue+1 || !strings.HasSuffix(h, "…") {
		t.Fatalf("error header not bounded to one line: %d runes, %q…", utf8.RuneCountInString(h), h[:20])
	}
}

func TestSubjectNeverUsesAHostileID(t *testing.T) {
	if got := Subject(id, nil); got != natsx.DLQSubject+"."+id {
		t.Fatalf("valid id: %s", got)
	}
	for _, bad := range []string{"", "a.b", ">", "*", "x y", strings.Repeat("f", 25)} {
		got := Subject(bad, []byte("row"))
		if !strings.HasPrefix(got, natsx.DLQSubject+".invalid.") || strings.Count(got, ".") != 3 || strings.ContainsAny(got, "*> ") {
			t.Errorf("id %q: subject %q", bad, got)
		}
	}
	if Subject("a.b", []byte("1")) == Subject("a.b", []byte("2")) {
		t.Error("different rows with the same bad id share a subject (one would replace the other)")
	}
}

func TestReplayableKinds(t *testing.T) {
	for k, want := range map[Kind]bool{KindRejected: true, KindExhausted: true, KindUnmappedType: true,
		KindInvalidRow: false, KindDuplicateName: false, KindUndecodable: false} {
		if k.Replayable() != want {
			t.Errorf("%s: replayable %v, want %v", k, k.Replayable(), want)
		}
	}
}

func TestPublishAndScan(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js := natstest.Start(t, natsx.DefaultTopology())
	huge := bytes.Repeat([]byte("x"), 1<<20)
	letters := []struct {
		l    Letter
		body []byte
	}{
		{Letter{Kind: KindRejected, Source: SourceConsumer, Reason: "rejected", BoxID: id}, []byte(`{"id":"` + id + `"}`)},
		// Garbage published on the same box's subject: its own letter,
		// not a replacement of the box's real one.
		{Letter{Kind: KindUndecodable, Source: SourceConsumer, Reason: "not JSON", BoxID: id, Subject: "ozmap.boxes." + id}, huge},
		{Letter{Kind: KindInvalidRow, Source: SourceProducer, Reason: "no name", BoxID: "bad id"}, []byte(`{}`)},
	}
	for _, x := range letters {
		if err := Publish(ctx, js, x.body, x.l); err != nil {
			t.Fatal(err)
		}
	}
	var got []Letter
	var sizes []int
	err := Scan(ctx, js, func(_ uint64, l Letter, body []byte) bool {
		got = append(got, l)
		sizes = append(sizes, len(body))
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Kind != KindRejected || got[1].Kind != KindUndecodable || got[2].Kind != KindInvalidRow {
		t.Fatalf("scanned %+v", got)
	}
	if sizes[1] != box.MaxMessageBytes {
		t.Fatalf("a 1 MiB body was kept at %d bytes, want the first %d", sizes[1], box.MaxMessageBytes)
	}
}
