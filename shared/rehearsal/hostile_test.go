package rehearsal_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/box"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/deadletter"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap/ozmaptest"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/scenario"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/sytex/sytextest"
)

// Scenario 8: garbage published by hand on the work subjects. Each message
// is dead-lettered as undecodable with its reason and where it was; nothing
// reaches Sytex; the consumer keeps running and syncs the real boxes after.
func TestGarbageOnWorkSubjectIsDeadLettered(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	env := start(t)
	defer env.Close()
	ex := scenario.Seed(env.OZmap, env.Sytex, newBoxes(20), 18)
	c := startConsumers(t, ctx, env, 1)[0]

	var real ozmaptest.Box // a real OZmap box, for a body on the wrong subject
	for _, b := range env.OZmap.Boxes() {
		if ex.Eligible[b.ID] {
			real = b
			break
		}
	}
	realBody, err := box.Box{Schema: box.SchemaVersion, ID: real.ID, Name: real.Name, TypeCode: "CTO",
		Latitude: real.Coords[1], Longitude: real.Coords[0], UpdatedAt: real.UpdatedAt, RunID: "by-hand"}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	schema2, err := json.Marshal(box.Box{Schema: 2, ID: ozmaptest.NewID(), Name: "CTO-SCHEMA-2", TypeCode: "CTO",
		Latitude: -27.6, Longitude: -48.5, UpdatedAt: time.Now().UTC(), RunID: "by-hand"})
	if err != nil {
		t.Fatal(err)
	}
	var schema2Box struct{ ID string }
	_ = json.Unmarshal(schema2, &schema2Box)
	notInOZmap := func() string { return natsx.WorkSubject + "." + ozmaptest.NewID() }
	wrongSubject := notInOZmap()

	garbage := []struct {
		name, subject string
		body          []byte
		reason        string // in Sync-Reason
	}{
		{"not JSON", notInOZmap(), []byte("this is not JSON {"), "not a box message"},
		{"empty body", notInOZmap(), nil, "not a box message"},
		{"wrong schema version", natsx.WorkSubject + "." + schema2Box.ID, schema2, "schema: version 2 is not supported"},
		{"missing fields", notInOZmap(), []byte(`{"schema":1,"id":"` + ozmaptest.NewID() + `"}`), "name: empty"},
		{"trailing data", notInOZmap(), append(append([]byte(nil), realBody...), []byte(` {"x":1}`)...), "trailing data"},
		{"1 MiB body", notInOZmap(), bytes.Repeat([]byte("x"), 1<<20), "1048576 bytes, more than the 16384"},
		{"box A on box B's subject", wrongSubject, realBody, "arrived on subject " + wrongSubject},
		{"non-id subject", natsx.WorkSubject + ".garbage", []byte("garbage"), "not a box message"},
		{"box on a deep subject", natsx.WorkSubject + ".a.b.c", realBody, "arrived on subject " + natsx.WorkSubject + ".a.b.c"},
	}
	seqs := map[string]uint64{} // subject → stream sequence
	for _, g := range garbage {
		ack, err := env.JS.Publish(ctx, g.subject, g.body)
		if err != nil {
			t.Fatalf("publish %s on %s: %v", g.name, g.subject, err)
		}
		seqs[g.subject] = ack.Sequence
	}
	// Beyond the server's max_payload (1 MiB) the publish is refused.
	before := streamState(t, ctx, env, natsx.WorkStream)
	if _, err := env.JS.Publish(ctx, notInOZmap(), bytes.Repeat([]byte("x"), 1<<20+1)); !errors.Is(err, nats.ErrMaxPayload) {
		t.Errorf("publishing 1 MiB + 1 byte: %v, want %v", err, nats.ErrMaxPayload)
	}
	if after := streamState(t, ctx, env, natsx.WorkStream); after.LastSeq != before.LastSeq {
		t.Errorf("a refused publish reached %s: last sequence %d → %d", natsx.WorkStream, before.LastSeq, after.LastSeq)
	}

	waitFor(t, ctx, "every garbage message dead-lettered", func() bool {
		return streamState(t, ctx, env, natsx.DLQStream).Msgs >= uint64(len(garbage))
	})
	waitIdle(t, ctx, env)
	letters := map[string]*nats.Msg{} // by original subject
	for _, m := range dlqMessages(t, ctx, env) {
		letters[m.Header.Get(deadletter.HeaderSubject)] = m
	}
	if len(letters) != len(garbage) {
		t.Errorf("%d dead letters, want one per garbage message (%d)", len(letters), len(garbage))
	}
	for _, g := range garbage {
		m := letters[g.subject]
		if m == nil {
			t.Errorf("%s on %s: no dead letter", g.name, g.subject)
			continue
		}
		h := m.Header
		if k := h.Get(deadletter.HeaderKind); k != string(deadletter.KindUndecodable) {
			t.Errorf("%s: %s = %q, want %s", g.name, deadletter.HeaderKind, k, deadletter.KindUndecodable)
		}
		if src := h.Get(deadletter.HeaderSource); src != string(deadletter.SourceConsumer) {
			t.Errorf("%s: %s = %q, want consumer", g.name, deadletter.HeaderSource, src)
		}
		if r := h.Get(deadletter.HeaderReason); !strings.Contains(r, g.reason) {
			t.Errorf("%s: %s = %q, want it to say %q", g.name, deadletter.HeaderReason, r, g.reason)
		}
		if seq := h.Get(deadletter.HeaderStreamSeq); seq != strconv.FormatUint(seqs[g.subject], 10) {
			t.Errorf("%s: %s = %q, want %d", g.name, deadletter.HeaderStreamSeq, seq, seqs[g.subject])
		}
		if len(m.Data) > box.MaxMessageBytes {
			t.Errorf("%s: the letter keeps a %d-byte body (at most %d)", g.name, len(m.Data), box.MaxMessageBytes)
		}
	}
	if n := env.Sytex.Counts(); n.Create+n.Update != 0 {
		t.Errorf("garbage reached Sytex: %+v", n)
	}

	// The consumer is still there and syncs the real boxes.
	if !c.Running() {
		t.Fatalf("consumer exited on garbage:\n%s", c.Logs())
	}
	produce(t, ctx, env)
	waitIdle(t, ctx, env)
	stopAll(t, c)
	checkSytex(t, ex, env.Sytex)
	checkElementCount(t, ex, env)
	if n := streamState(t, ctx, env, natsx.DLQStream).Msgs; n != uint64(len(garbage)) {
		t.Errorf("DLQ holds %d letters after the real sync, want the %d garbage letters only", n, len(garbage))
	}
}

// Scenario 9: names with spaces, dots, NATS wildcards, slashes, accents,
// emoji, 300 characters… reach Sytex exactly as they are in OZmap, and a
// second pass over the same boxes finds each one again (no second create).
func TestHostileNamesSyncExactly(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	env := start(t)
	defer env.Close()
	types := ozmaptest.DefaultBoxTypes()
	for _, bt := range types {
		env.OZmap.PutBoxType(bt)
	}
	names := []string{
		"CTO 01 Rua das Flores 123",
		"CTO.FLN.0001",
		"*",
		">",
		"CTO.*.>",
		"ozmap.boxes.>",
		"CTO/FLN/0001",
		`CTO\FLN\0001`,
		"Caixa São João – Ação Ótica Ñandú",
		"CAIXA SÃO JOÃO – AÇÃO ÓTICA ÑANDÚ", // differs only by case: another element
		"CTO 📦🚀 Fibra 🇧🇷",
		"CTO %20 & ? # = + ; q=1",
		`CTO "aspas" 'simples' <b>`,
		"CTO\tTAB",
		"日本語のボックス",
		strings.Repeat("x", 296) + "-300",
		strings.Repeat("ç", 300),
	}
	ex := scenario.Expect{Want: map[string]sytextest.Element{}}
	for i, name := range names {
		b := ozmaptest.Box{ID: ozmaptest.NewID(), Name: name, Implanted: true, BoxType: types[0].ID,
			Coords: []float64{-48.55 + float64(i)*0.001, -27.59 - float64(i)*0.001}}
		env.OZmap.PutBox(b)
		ex.Want[name] = sytexElement(b, scenario.NETypes["CTO"])
	}
	// Sytex trims names: one with outer spaces could never be found again
	// by its exact name, so the producer dead-letters it as an invalid row
	// (an edit in OZmap cures it) instead of duplicating it on every sync.
	padded := ozmaptest.Box{ID: ozmaptest.NewID(), Name: " CTO-PADDED ", Implanted: true, BoxType: types[0].ID,
		Coords: []float64{-48.6, -27.7}}
	env.OZmap.PutBox(padded)
	ex.Rejected = []string{padded.Name, strings.TrimSpace(padded.Name)}

	produce(t, ctx, env)
	drain(t, ctx, env, 1)
	check := func(pass string) {
		t.Helper()
		checkSytex(t, ex, env.Sytex)
		if got := len(env.Sytex.Elements()); got != len(names) {
			t.Errorf("%s: Sytex holds %d elements, want %d", pass, got, len(names))
		}
		for _, name := range names {
			got := env.Sytex.ElementsByName(name)
			if len(got) != 1 || got[0].Name != name || got[0].Code != name {
				t.Errorf("%s: Sytex elements named %q: %+v; want one with that exact name and code", pass, name, got)
			}
		}
		var padLetters []*nats.Msg
		for _, m := range dlqMessages(t, ctx, env) {
			if m.Header.Get(deadletter.HeaderBoxID) == padded.ID {
				padLetters = append(padLetters, m)
			} else {
				t.Errorf("%s: unexpected dead letter %v", pass, m.Header)
			}
		}
		if len(padLetters) != 1 || padLetters[0].Header.Get(deadletter.HeaderKind) != string(deadletter.KindInvalidRow) ||
			!strings.Contains(padLetters[0].Header.Get(deadletter.HeaderReason), "leading or trailing spaces") {
			t.Errorf("%s: letters for the box named %q: %d, want one invalid-row letter saying why (spaces)", pass, padded.Name, len(padLetters))
		}
	}
	check("first sync")

	// The nightly pass over the same boxes: each name is found again.
	env.Sytex.ResetCounts()
	replay(t, ctx, env, "-since", "1h")
	drain(t, ctx, env, 1)
	if n := env.Sytex.Counts(); n.Create != 0 || n.Update != 0 {
		t.Errorf("second pass wrote to Sytex: %+v; every name must be found again, exactly", n)
	}
	check("second pass")
}
