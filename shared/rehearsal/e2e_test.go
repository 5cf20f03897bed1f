package rehearsal_test

// End-to-end acceptance tests: the real producer and consumer binaries run as
// subprocesses against an embedded JetStream server and the OZmap and Sytex
// simulators (package rehearsal). Every wait is bounded by a context deadline.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/deadletter"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/rehearsal"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/scenario"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/sytex/sytextest"
)

// binDir holds the producer and consumer built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "rehearsal-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	err = rehearsal.Build(ctx, dir)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build:", err)
		return 1
	}
	binDir = dir
	return m.Run()
}

// --- helpers ---------------------------------------------------------------

func start(t *testing.T) *rehearsal.Env {
	t.Helper()
	env, err := rehearsal.Start(binDir, t.TempDir())
	if err != nil {
		t.Fatalf("rehearsal.Start: %v", err)
	}
	return env
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// produce runs `producer -once` and fails the test unless it exits 0.
func produce(t *testing.T, ctx context.Context, env *rehearsal.Env) string {
	t.Helper()
	out, err := env.Produce(ctx)
	if err != nil {
		t.Fatalf("producer -once: %v\nstdout: %s\nlogs:\n%s", err, out, env.Logs())
	}
	t.Logf("producer -once: %s", strings.TrimSpace(out))
	return out
}

// drain starts n consumers, waits until the backlog is empty and stops them;
// each must exit 0 on SIGTERM.
func drain(t *testing.T, ctx context.Context, env *rehearsal.Env, n int) {
	t.Helper()
	var cs []*rehearsal.Consumer
	for i := 0; i < n; i++ {
		c, err := env.StartConsumer(ctx)
		if err != nil {
			for _, c := range cs {
				c.Kill()
			}
			t.Fatalf("start consumer %d: %v", i+1, err)
		}
		cs = append(cs, c)
	}
	werr := env.WaitIdle(ctx)
	for i, c := range cs {
		if err := c.Stop(30 * time.Second); err != nil {
			t.Errorf("consumer %d did not exit 0 on SIGTERM: %v", i+1, err)
		}
	}
	if werr != nil {
		t.Fatalf("consumers did not finish: %v\nlogs:\n%s", werr, env.Logs())
	}
}

type cmdResult struct {
	stdout, stderr string
	code           int
}

// run runs one of the binaries with the given environment.
func run(t *testing.T, ctx context.Context, environ []string, prog string, args ...string) cmdResult {
	t.Helper()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, prog), args...)
	cmd.Env = environ
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cmdResult{stdout: stdout.String(), stderr: stderr.String()}
	rehearsal.SaveLog(prog, append(stdout.Bytes(), stderr.Bytes()...))
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		t.Fatalf("run %s %v: %v", prog, args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("run %s %v: %v\nstdout: %s\nstderr: %s", prog, args, ctx.Err(), res.stdout, res.stderr)
	}
	return res
}

// replay runs `consumer replay args...` and fails unless it exits 0.
func replay(t *testing.T, ctx context.Context, env *rehearsal.Env, args ...string) cmdResult {
	t.Helper()
	r := run(t, ctx, env.Environ(), "consumer", append([]string{"replay"}, args...)...)
	t.Logf("consumer replay %v:\n%s", args, r.stdout)
	if r.code != 0 {
		t.Fatalf("consumer replay %v: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

func checkSytex(t *testing.T, ex scenario.Expect, sy *sytextest.Server) {
	t.Helper()
	if problems := ex.Check(sy); len(problems) > 0 {
		t.Errorf("Sytex differs from the expected result (%d problems):\n  %s", len(problems), strings.Join(problems, "\n  "))
	}
}

func deadLetters(t *testing.T, ctx context.Context, env *rehearsal.Env) map[string][]string {
	t.Helper()
	dl, err := env.DeadLetters(ctx)
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	for k := range dl {
		sort.Strings(dl[k])
	}
	return dl
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

func equalSets(a, b []string) bool {
	a, b = sorted(a), sorted(b)
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// dlqMessages returns every message in the dead-letter stream.
func dlqMessages(t *testing.T, ctx context.Context, env *rehearsal.Env) []*nats.Msg {
	t.Helper()
	s, err := env.JS.Stream(ctx, natsx.DLQStream)
	if err != nil {
		t.Fatalf("open DLQ: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("DLQ info: %v", err)
	}
	var out []*nats.Msg
	if info.State.Msgs == 0 {
		return nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		out = append(out, &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
	}
	return out
}

func workStreamMsgs(t *testing.T, ctx context.Context, env *rehearsal.Env) uint64 {
	t.Helper()
	s, err := env.JS.Stream(ctx, natsx.WorkStream)
	if err != nil {
		t.Fatalf("open work stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("work stream info: %v", err)
	}
	return info.State.Msgs
}

var publishedRE = regexp.MustCompile(`(\d+) published`)

func publishedCount(t *testing.T, out string) int {
	t.Helper()
	m := publishedRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("producer output has no \"N published\": %q", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func backlog(t *testing.T, ctx context.Context, env *rehearsal.Env) uint64 {
	t.Helper()
	n, err := env.Backlog(ctx)
	if err != nil {
		t.Fatalf("Backlog: %v", err)
	}
	return n
}

// firstSync seeds the Demo mix and runs a complete sync with two consumers.
func firstSync(t *testing.T, ctx context.Context, env *rehearsal.Env) scenario.Expect {
	t.Helper()
	ex := scenario.Seed(env.OZmap, env.Sytex, scenario.Demo, 42)
	produce(t, ctx, env)
	drain(t, ctx, env, 2)
	return ex
}

// --- tests -----------------------------------------------------------------

func TestFirstSyncCreatesAndUpdatesExactly(t *testing.T) {
	ctx := testCtx(t, 45*time.Second)
	env := start(t)
	defer env.Close()
	started := time.Now()

	ex := scenario.Seed(env.OZmap, env.Sytex, scenario.Demo, 42)
	if len(ex.Invalid) == 0 || len(ex.Losers) == 0 || len(ex.Rejected) != 1 || len(ex.Created) == 0 || len(ex.Updated) == 0 {
		t.Fatalf("Demo mix lacks a kind of box: %d invalid, %d losers, %d rejected, %d created, %d updated",
			len(ex.Invalid), len(ex.Losers), len(ex.Rejected), len(ex.Created), len(ex.Updated))
	}
	env.Sytex.ResetCounts()
	produce(t, ctx, env)
	drain(t, ctx, env, 2)

	checkSytex(t, ex, env.Sytex)
	n := env.Sytex.Counts()
	if want := int64(len(ex.Created) + len(ex.Rejected)); n.Create != want {
		t.Errorf("Sytex creates: %d, want %d (%d new + %d rejected)", n.Create, want, len(ex.Created), len(ex.Rejected))
	}
	if want := int64(len(ex.Updated)); n.Update != want {
		t.Errorf("Sytex updates: %d, want %d", n.Update, want)
	}

	dl := deadLetters(t, ctx, env)
	if got := dl[string(deadletter.KindInvalidRow)]; !equalSets(got, ex.Invalid) {
		t.Errorf("invalid-row letters: %v, want %v", got, sorted(ex.Invalid))
	}
	if got := dl[string(deadletter.KindDuplicateName)]; !equalSets(got, ex.Losers) {
		t.Errorf("duplicate-name letters: %v, want %v", got, sorted(ex.Losers))
	}
	if got := len(dl[string(deadletter.KindRejected)]); got != 1 {
		t.Errorf("sytex-rejected letters: %d, want 1", got)
	}
	total := 0
	for _, ids := range dl {
		total += len(ids)
	}
	if want := len(ex.Invalid) + len(ex.Losers) + len(ex.Rejected); total != want {
		t.Errorf("dead letters: %d (%v), want %d", total, dl, want)
	}

	// The headers tell an operator what failed and why.
	names := map[string]string{} // OZmap id → name, for the winner check
	for _, b := range env.OZmap.Boxes() {
		names[b.ID] = b.Name
	}
	work, err := env.JS.Stream(ctx, natsx.WorkStream)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range dlqMessages(t, ctx, env) {
		h := m.Header
		kind := h.Get(deadletter.HeaderKind)
		if h.Get(deadletter.HeaderReason) == "" {
			t.Errorf("%s letter %s has no %s", kind, m.Subject, deadletter.HeaderReason)
		}
		ts, err := time.Parse(time.RFC3339, h.Get(deadletter.HeaderTime))
		if err != nil || ts.Before(started.Add(-2*time.Second)) || ts.After(time.Now().Add(2*time.Second)) {
			t.Errorf("%s letter %s: %s %q is not an RFC 3339 time of this run", kind, m.Subject, deadletter.HeaderTime, h.Get(deadletter.HeaderTime))
		}
		if len(m.Data) == 0 {
			t.Errorf("%s letter %s has an empty body", kind, m.Subject)
		}
		switch deadletter.Kind(kind) {
		case deadletter.KindInvalidRow:
			if src := h.Get(deadletter.HeaderSource); src != string(deadletter.SourceProducer) {
				t.Errorf("invalid-row letter source %q, want producer", src)
			}
		case deadletter.KindDuplicateName:
			if src := h.Get(deadletter.HeaderSource); src != string(deadletter.SourceProducer) {
				t.Errorf("duplicate-name letter source %q, want producer", src)
			}
			loser, winner := h.Get(deadletter.HeaderBoxID), h.Get(deadletter.HeaderWinnerID)
			if winner == "" || winner == loser || names[winner] != names[loser] {
				t.Errorf("duplicate-name letter for %s: winner %q does not share its name %q", loser, winner, names[loser])
			}
		case deadletter.KindRejected:
			if src := h.Get(deadletter.HeaderSource); src != string(deadletter.SourceConsumer) {
				t.Errorf("sytex-rejected letter source %q, want consumer", src)
			}
			if st := h.Get(deadletter.HeaderHTTPStatus); st != "400" {
				t.Errorf("sytex-rejected %s = %q, want 400", deadletter.HeaderHTTPStatus, st)
			}
			if e := h.Get(deadletter.HeaderError); !strings.Contains(e, "Network element code contains characters that are not allowed.") {
				t.Errorf("sytex-rejected %s = %q, want the simulator's body", deadletter.HeaderError, e)
			}
			if a := h.Get(deadletter.HeaderAttempts); a != "1" {
				t.Errorf("sytex-rejected %s = %q, want 1 (a 400 is not retried)", deadletter.HeaderAttempts, a)
			}
			if name := h.Get(deadletter.HeaderBoxName); name != ex.Rejected[0] {
				t.Errorf("sytex-rejected %s = %q, want %q", deadletter.HeaderBoxName, name, ex.Rejected[0])
			}
			id := h.Get(deadletter.HeaderBoxID)
			subj := h.Get(deadletter.HeaderSubject)
			if want := natsx.WorkSubject + "." + id; subj != want {
				t.Errorf("sytex-rejected %s = %q, want %q", deadletter.HeaderSubject, subj, want)
			}
			seq, err := strconv.ParseUint(h.Get(deadletter.HeaderStreamSeq), 10, 64)
			if err != nil || seq == 0 {
				t.Errorf("sytex-rejected %s = %q, want a stream sequence", deadletter.HeaderStreamSeq, h.Get(deadletter.HeaderStreamSeq))
			} else if orig, err := work.GetMsg(ctx, seq); err != nil {
				t.Errorf("original message %d of the rejected box: %v", seq, err)
			} else if orig.Subject != subj {
				t.Errorf("original message %d has subject %q, letter says %q", seq, orig.Subject, subj)
			}
		default:
			t.Errorf("unexpected dead letter kind %q: %v", kind, h)
		}
	}
}

func TestSecondSyncWithoutChangesWritesNothing(t *testing.T) {
	ctx := testCtx(t, 45*time.Second)
	env := start(t)
	defer env.Close()
	ex := firstSync(t, ctx, env)
	before := env.Sytex.Elements()

	// A rerun inside the dedup window publishes nothing: nothing to write.
	env.Sytex.ResetCounts()
	out := produce(t, ctx, env)
	if n := publishedCount(t, out); n != 0 {
		t.Errorf("rerun published %d boxes, want 0: %s", n, out)
	}
	drain(t, ctx, env, 2)
	if n := env.Sytex.Counts(); n.Create != 0 || n.Update != 0 {
		t.Errorf("rerun wrote to Sytex: %+v", n)
	}

	// The nightly case: every box comes again (outside the dedup window).
	inStream := workStreamMsgs(t, ctx, env)
	if want := uint64(len(ex.Want) + len(ex.Rejected)); inStream != want {
		t.Errorf("work stream holds %d boxes, want %d (every winner, once)", inStream, want)
	}
	r := replay(t, ctx, env, "-since", "1h")
	m := regexp.MustCompile(`republished (\d+) boxes`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("replay -since output: %q", r.stdout)
	}
	republished, _ := strconv.Atoi(m[1])
	if uint64(republished) != inStream {
		t.Errorf("replay -since 1h republished %d, want every one of the %d boxes in %s", republished, inStream, natsx.WorkStream)
	}
	env.Sytex.ResetCounts()
	drain(t, ctx, env, 2)
	n := env.Sytex.Counts()
	// The rejected box is tried again and refused again (the simulator still
	// answers 400): a create request that writes nothing.
	if n.Create != int64(len(ex.Rejected)) || n.Update != 0 {
		t.Errorf("nightly republish of unchanged boxes: %d creates, %d updates; want %d (the rejected box, refused again) and 0",
			n.Create, n.Update, len(ex.Rejected))
	}
	if n.Search != int64(republished) {
		t.Errorf("nightly republish: %d searches, want %d (one per box)", n.Search, republished)
	}
	if after := env.Sytex.Elements(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("Sytex changed although nothing changed in OZmap")
	}
	checkSytex(t, ex, env.Sytex)
}

func TestTwoConsumersNoDuplicates(t *testing.T) {
	ctx := testCtx(t, 45*time.Second)
	env := start(t)
	defer env.Close()
	env.Extra["CONSUMER_CONCURRENCY"] = "16"
	mix := scenario.Mix{Boxes: 600, InProjectPct: 10, NearMisses: 10}
	ex := scenario.Seed(env.OZmap, env.Sytex, mix, 7)
	if len(ex.Created) != len(ex.Want) {
		t.Fatalf("mix is not all new: %d created of %d", len(ex.Created), len(ex.Want))
	}
	env.Sytex.ResetCounts()
	produce(t, ctx, env)
	drain(t, ctx, env, 2)
	checkSytex(t, ex, env.Sytex)
	if n := env.Sytex.Counts(); n.Create != int64(len(ex.Created)) || n.Update != 0 {
		t.Errorf("Sytex requests %+v; want exactly %d creates and no update", n, len(ex.Created))
	}
}

func TestRerunLeavesNoMorePendingWork(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	env := start(t)
	defer env.Close()
	ex := scenario.Seed(env.OZmap, env.Sytex, scenario.Demo, 42)

	out1 := produce(t, ctx, env)
	b1 := backlog(t, ctx, env)
	if want := uint64(len(ex.Want) + len(ex.Rejected)); b1 != want {
		t.Errorf("backlog after the first run: %d, want %d", b1, want)
	}
	if n := publishedCount(t, out1); uint64(n) != b1 {
		t.Errorf("first run says %d published, backlog is %d", n, b1)
	}
	dl1 := deadLetters(t, ctx, env)
	out2 := produce(t, ctx, env)
	// The rerun replaces its producer letters with fresh ones: same boxes.
	if dl2 := deadLetters(t, ctx, env); fmt.Sprint(dl2) != fmt.Sprint(dl1) {
		t.Errorf("dead letters after the rerun: %v, want %v", dl2, dl1)
	}
	if b2 := backlog(t, ctx, env); b2 != b1 {
		t.Errorf("backlog after the rerun: %d, want %d (unchanged)", b2, b1)
	}
	if !strings.Contains(out2, " 0 published") {
		t.Errorf("rerun output does not say 0 published: %q", out2)
	}
	if n := env.Sytex.Counts(); n.Create+n.Update != 0 {
		t.Errorf("Sytex written without consumers: %+v", n)
	}
}

func TestChangedBoxIsRepublished(t *testing.T) {
	ctx := testCtx(t, 45*time.Second)
	env := start(t)
	defer env.Close()
	ex := firstSync(t, ctx, env)

	name := ex.Unchanged[0]
	var found bool
	for _, b := range env.OZmap.Boxes() {
		if b.Name != name || !ex.Eligible[b.ID] {
			continue
		}
		found = true
		lng, lat := b.Coords[0]+0.00123456789, b.Coords[1]-0.00098765432
		b.Coords = []float64{lng, lat}
		b.Lat, b.Lng = lat, lng
		b.UpdatedAt = b.UpdatedAt.Add(time.Hour)
		env.OZmap.PutBox(b)
		want := ex.Want[name]
		want.Latitude, want.Longitude = math.Round(lat*1e6)/1e6, math.Round(lng*1e6)/1e6
		ex.Want[name] = want
		break
	}
	if !found {
		t.Fatalf("no OZmap box named %q", name)
	}

	out := produce(t, ctx, env)
	if n := publishedCount(t, out); n != 1 {
		t.Errorf("after one change the producer published %d, want 1: %s", n, out)
	}
	env.Sytex.ResetCounts()
	drain(t, ctx, env, 2)
	got := env.Sytex.ElementsByName(name)
	if len(got) != 1 {
		t.Fatalf("Sytex has %d elements named %q, want 1", len(got), name)
	}
	want := ex.Want[name]
	if math.Abs(got[0].Latitude-want.Latitude) > 1e-9 || math.Abs(got[0].Longitude-want.Longitude) > 1e-9 {
		t.Errorf("%q in Sytex at %.8f,%.8f; want %.6f,%.6f", name, got[0].Latitude, got[0].Longitude, want.Latitude, want.Longitude)
	}
	if n := env.Sytex.Counts(); n.Update != 1 || n.Create != 0 {
		t.Errorf("Sytex requests %+v; want exactly 1 update", n)
	}
	checkSytex(t, ex, env.Sytex)
}

func TestReplayFromDLQ(t *testing.T) {
	ctx := testCtx(t, 45*time.Second)
	env := start(t)
	defer env.Close()
	ex := firstSync(t, ctx, env)
	rejected := ex.Rejected[0]
	dl := deadLetters(t, ctx, env)
	if len(dl[string(deadletter.KindRejected)]) != 1 {
		t.Fatalf("the rejected box is not in the DLQ: %v", dl)
	}
	producerLetters := len(ex.Invalid) + len(ex.Losers)

	env.Sytex.FailMatching(nil) // the cause is fixed

	r := replay(t, ctx, env, "-dry-run")
	if !strings.Contains(r.stdout, "would move") {
		t.Errorf("replay -dry-run output does not say \"would move\": %q", r.stdout)
	}
	if !strings.Contains(r.stdout, "1 would move") || !strings.Contains(r.stdout, fmt.Sprintf("%d stay", producerLetters)) {
		t.Errorf("replay -dry-run summary: %q; want 1 would move, %d stay", r.stdout, producerLetters)
	}
	if got := deadLetters(t, ctx, env); fmt.Sprint(got) != fmt.Sprint(dl) {
		t.Errorf("replay -dry-run changed the DLQ: %v, was %v", got, dl)
	}
	if b := backlog(t, ctx, env); b != 0 {
		t.Errorf("replay -dry-run queued %d boxes", b)
	}

	r = replay(t, ctx, env)
	if !strings.Contains(r.stdout, "moved 1 ") || !strings.Contains(r.stdout, fmt.Sprintf("%d stay", producerLetters)) {
		t.Errorf("replay summary: %q; want moved 1, %d stay", r.stdout, producerLetters)
	}
	drain(t, ctx, env, 2)
	if got := env.Sytex.ElementsByName(rejected); len(got) != 1 {
		t.Errorf("after replay Sytex has %d elements named %q, want 1", len(got), rejected)
	}
	after := deadLetters(t, ctx, env)
	if len(after[string(deadletter.KindRejected)]) != 0 {
		t.Errorf("replayed letter still in the DLQ: %v", after)
	}
	if !equalSets(after[string(deadletter.KindInvalidRow)], ex.Invalid) || !equalSets(after[string(deadletter.KindDuplicateName)], ex.Losers) {
		t.Errorf("producer letters after replay: %v; want invalid %v, duplicate %v", after, ex.Invalid, ex.Losers)
	}
	total := 0
	for _, ids := range after {
		total += len(ids)
	}
	if total != producerLetters {
		t.Errorf("DLQ holds %d letters after replay, want the %d producer letters", total, producerLetters)
	}
	fixed := ex
	fixed.Rejected = nil
	checkSytex(t, fixed, env.Sytex)

	// A losing duplicate is never replayed: only an edit in OZmap cures it.
	loser := ex.Losers[0]
	var winnerName string
	for _, b := range env.OZmap.Boxes() {
		if b.ID == loser {
			winnerName = b.Name
		}
	}
	winnerBefore := env.Sytex.ElementsByName(winnerName)
	env.Sytex.ResetCounts()
	r = replay(t, ctx, env, "-box", loser)
	if !strings.Contains(r.stdout, "moved 0 ") || !strings.Contains(r.stdout, "1 stay") {
		t.Errorf("replay -box <loser>: %q; want moved 0, 1 stay", r.stdout)
	}
	if b := backlog(t, ctx, env); b != 0 {
		t.Errorf("replay -box <loser> queued %d boxes", b)
	}
	drain(t, ctx, env, 1)
	if got := deadLetters(t, ctx, env)[string(deadletter.KindDuplicateName)]; !equalSets(got, ex.Losers) {
		t.Errorf("duplicate-name letters after replay -box: %v, want %v", got, ex.Losers)
	}
	if got := env.Sytex.ElementsByName(winnerName); fmt.Sprint(got) != fmt.Sprint(winnerBefore) {
		t.Errorf("winner %q changed in Sytex: %+v, was %+v", winnerName, got, winnerBefore)
	}
	if n := env.Sytex.Counts(); n.Create+n.Update != 0 {
		t.Errorf("replay of a loser wrote to Sytex: %+v", n)
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	ctx := testCtx(t, 45*time.Second)
	env := start(t)
	defer env.Close()
	env.Extra["LOG_LEVEL"] = "debug"
	// Make the consumers log retries and errors too.
	env.Sytex.FailNext(503, 3)
	firstSync(t, ctx, env)
	env.Sytex.FailMatching(nil)
	var outputs []string
	for _, args := range [][]string{{"-dry-run"}, {}, {"-since", "1h", "-dry-run"}} {
		r := replay(t, ctx, env, args...)
		outputs = append(outputs, r.stdout, r.stderr)
	}
	drain(t, ctx, env, 1)
	// A configuration error must not dump the settings, secrets included.
	bad := run(t, ctx, append(env.Environ(), "SYTEX_ORGANIZATION_ID=abc", "OZMAP_PAGE_SIZE=abc"), "consumer")
	outputs = append(outputs, bad.stdout, bad.stderr)
	bad = run(t, ctx, append(env.Environ(), "SYTEX_ORGANIZATION_ID=abc", "OZMAP_PAGE_SIZE=abc"), "producer", "-once")
	outputs = append(outputs, bad.stdout, bad.stderr)

	texts := map[string]string{"program logs": env.Logs()}
	for i, o := range outputs {
		texts[fmt.Sprintf("replay/config output %d", i)] = o
	}
	for _, m := range dlqMessages(t, ctx, env) {
		texts["DLQ letter "+m.Subject+" body"] = string(m.Data)
		for k, vs := range m.Header {
			texts["DLQ letter "+m.Subject+" header "+k] = strings.Join(vs, "\n")
		}
	}
	if len(env.Logs()) == 0 {
		t.Fatal("the programs logged nothing")
	}
	for where, text := range texts {
		for _, secret := range []string{rehearsal.OZmapKey, rehearsal.SytexToken} {
			if strings.Contains(text, secret) {
				t.Errorf("%s contains a secret %q", where, secret[:10]+"…")
			}
		}
	}
}

func TestBadConfigStopsWithOneLine(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	env := start(t)
	defer env.Close()
	without := func(environ []string, name string) []string {
		var out []string
		for _, kv := range environ {
			if !strings.HasPrefix(kv, name+"=") {
				out = append(out, kv)
			}
		}
		return out
	}
	cases := []struct {
		name, prog, variable string
		environ              []string
		args                 []string
	}{
		{"producer without OZMAP_URL", "producer", "OZMAP_URL", without(env.Environ(), "OZMAP_URL"), []string{"-once"}},
		{"producer with OZMAP_PAGE_SIZE=abc", "producer", "OZMAP_PAGE_SIZE", append(without(env.Environ(), "OZMAP_PAGE_SIZE"), "OZMAP_PAGE_SIZE=abc"), []string{"-once"}},
		{"consumer with SYTEX_NE_TYPE_MAP=CTO=abc", "consumer", "SYTEX_NE_TYPE_MAP", append(without(env.Environ(), "SYTEX_NE_TYPE_MAP"), "SYTEX_NE_TYPE_MAP=CTO=abc"), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, ctx, c.environ, c.prog, c.args...)
			t.Logf("%s: exit %d, stderr %q", c.prog, r.code, r.stderr)
			if r.code == 0 {
				t.Fatalf("%s exited 0; stdout %q stderr %q", c.prog, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stderr, c.variable) {
				t.Errorf("stderr does not name %s: %q", c.variable, r.stderr)
			}
			if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); len(lines) != 1 {
				t.Errorf("stderr has %d lines, want one:\n%s", len(lines), r.stderr)
			}
			for _, secret := range []string{rehearsal.OZmapKey, rehearsal.SytexToken} {
				if strings.Contains(r.stderr+r.stdout, secret) {
					t.Errorf("output contains a secret")
				}
			}
		})
	}
	// Nothing reached the simulators.
	if n := env.Sytex.Counts(); n.Total != 0 {
		t.Errorf("Sytex got %d requests from misconfigured programs", n.Total)
	}
	if n := env.OZmap.Requests(); n != 0 {
		t.Errorf("OZmap got %d requests from misconfigured programs", n)
	}
}
