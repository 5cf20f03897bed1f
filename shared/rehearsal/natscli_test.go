package rehearsal_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/boxstatus"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/rehearsal"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/runreport"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/scenario"
)

// natsCLIVersion is the NATS CLI the README tells operators to install.
const natsCLIVersion = "v0.5.0"

// natsCLI builds the NATS CLI once per machine (cached in the user cache
// directory) and returns its path.
func natsCLI(t *testing.T) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "ozmap-sytex-sync", "natscli-"+natsCLIVersion)
	bin := filepath.Join(dir, "nats")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", "github.com/nats-io/natscli/nats@"+natsCLIVersion)
	cmd.Dir = t.TempDir() // outside this module
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install natscli: %v\n%s", err, out)
	}
	return bin
}

// readmeNATSCommands returns the `nats ...` lines of the README's
// "Monitoring with the NATS CLI" code block.
func readmeNATSCommands(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n## Monitoring with the NATS CLI\n")
	if !ok {
		t.Fatal(`README.md has no "## Monitoring with the NATS CLI" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	_, block, ok := strings.Cut(section, "```sh\n")
	if !ok {
		t.Fatal("the Monitoring section has no ```sh block")
	}
	block, _, _ = strings.Cut(block, "```")
	var cmds []string
	sc := bufio.NewScanner(strings.NewReader(block))
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "nats ") {
			cmds = append(cmds, line)
		}
	}
	return cmds
}

// TestREADMENATSCommands runs every command of the README's monitoring block
// with the real NATS CLI after a sync with a rejected box, and checks each
// shows what the README says it shows. A failed run must be visible too.
func TestREADMENATSCommands(t *testing.T) {
	cli := natsCLI(t)
	ctx := testCtx(t, 3*time.Minute)
	env := start(t)
	defer env.Close()
	ex := firstSync(t, ctx, env)

	last := lastReport(t, ctx, env)
	rejected := deadLetters(t, ctx, env)["sytex-rejected"]
	if len(rejected) != 1 {
		t.Fatalf("want one sytex-rejected letter, have %v", rejected)
	}
	// What each command must show, after the README's placeholders are
	// filled in. A command the README gains without a check here fails.
	want := map[string][]string{
		"nats kv get --raw OZMAP_SYNC_RUNS last": {`"run_id":"` + last.RunID + `"`, `"synced":{`,
			`"created":` + itoa(len(ex.Created)), `"updated":` + itoa(len(ex.Updated)), `"dead_lettered":1`, `"skipped":{`},
		"nats kv ls OZMAP_SYNC_RUNS":                                          {"run." + last.RunID, "last"},
		"nats kv get --raw OZMAP_SYNC_RUNS run." + last.RunID:                 {`"run_id":"` + last.RunID + `"`, `"eligible":`},
		"nats kv get --raw OZMAP_SYNC_BOXES " + rejected[0]:                   {`"outcome":"failed"`, `"dead_letter":"sytex-rejected"`, "Sytex rejected the box"},
		"nats consumer info OZMAP_BOXES sytex-upsert":                         {"Unprocessed Messages: 0", "Outstanding Acks: 0"},
		"nats stream info OZMAP_BOXES_DLQ":                                    {"Messages: " + itoa(len(ex.Invalid)+len(ex.Losers)+len(ex.Rejected))},
		"nats stream view OZMAP_BOXES_DLQ":                                    {"Sync-Reason", "Sync-Kind: sytex-rejected", "Sync-Box-Id: " + rejected[0], "Sync-Kind: invalid-row", "Reached apparent end of data"},
		"nats stream get OZMAP_BOXES_DLQ --last-for ozmap.dlq." + rejected[0]: {"Sync-Kind: sytex-rejected", "Sync-Http-Status: 400", "Sync-Reason: Sytex rejected the box"},
		"nats stream info OZMAP_BOXES":                                        {"Messages: "},
		"nats events --js-advisory":                                           {"sytex-upsert"},
	}
	cmds := readmeNATSCommands(t)
	if len(cmds) < 8 {
		t.Fatalf("README monitoring block has only %d nats commands: %q", len(cmds), cmds)
	}
	fill := strings.NewReplacer("<run id>", last.RunID, "<ozmap box id>", rejected[0])
	for _, readme := range cmds {
		line := fill.Replace(readme)
		checks, ok := want[line]
		if !ok {
			t.Errorf("README command %q has no check in this test: add one", readme)
			continue
		}
		var out string
		if strings.HasPrefix(line, "nats events") {
			out = watchAdvisories(t, ctx, env, cli, line, ex)
		} else {
			out = runCLI(t, ctx, env, cli, line)
		}
		for _, w := range checks {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output lacks %q:\n%s", line, w, out)
			}
		}
	}

	// A failed run is visible from the CLI alone.
	env.OZmap.SetOutage(true)
	r := run(t, ctx, env.Environ(), "producer", "-once")
	env.OZmap.SetOutage(false)
	if r.code == 0 {
		t.Fatalf("producer -once during an OZmap outage exited 0:\n%s", r.stdout)
	}
	out := runCLI(t, ctx, env, cli, "nats kv get --raw OZMAP_SYNC_RUNS last")
	if !regexp.MustCompile(`"error":"[^"]*OZmap`).MatchString(out) {
		t.Errorf("after a failed run, `nats kv get OZMAP_SYNC_RUNS last` does not show its error:\n%s", out)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// runCLI runs one command line (no shell) against the environment's server.
func runCLI(t *testing.T, ctx context.Context, env *rehearsal.Env, cli, line string) string {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	args := strings.Fields(line)[1:]
	cmd := exec.CommandContext(cctx, cli, args...)
	if strings.HasPrefix(line, "nats stream view") {
		// Paging needs a terminal: give it one with script(1).
		cmd = exec.CommandContext(cctx, "script", "-qec", cli+" "+strings.Join(args, " "), "/dev/null")
	}
	cmd.Env = cliEnv(t, env)
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	rehearsal.SaveLog("nats", out)
	if err != nil {
		t.Errorf("%s: %v\n%s", line, err, out)
	}
	return string(out)
}

func cliEnv(t *testing.T, env *rehearsal.Env) []string {
	home := t.TempDir() // no stray CLI context from the machine
	return []string{"NATS_URL=" + env.NC.ConnectedUrl(), "HOME=" + home, "XDG_CONFIG_HOME=" + home, "PATH=" + os.Getenv("PATH")}
}

// watchAdvisories runs the streaming events command, dead-letters one more
// box (a second sync of a box Sytex rejects) and returns what it printed by
// the time the advisory arrived.
func watchAdvisories(t *testing.T, ctx context.Context, env *rehearsal.Env, cli, line string, ex scenario.Expect) string {
	t.Helper()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(cctx, cli, strings.Fields(line)[1:]...)
	cmd.Env = cliEnv(t, env)
	var mu sync.Mutex
	var buf bytes.Buffer
	w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return buf.Write(p) })
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	// Wait until the CLI has subscribed, or the advisory may come first.
	for !cliSubscribed(env) {
		select {
		case <-ctx.Done():
			t.Fatalf("%s never subscribed", line)
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Replaying the rejected box makes the consumer terminate it again.
	replay(t, ctx, env, "-reason", "rejected")
	c, err := env.StartConsumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Stop(30 * time.Second) }()
	for {
		mu.Lock()
		out := buf.String()
		mu.Unlock()
		if strings.Contains(out, "sytex-upsert") {
			return out
		}
		select {
		case <-ctx.Done():
			return out
		case <-time.After(200 * time.Millisecond):
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func lastReport(t *testing.T, ctx context.Context, env *rehearsal.Env) runreport.Report {
	t.Helper()
	kv, err := env.JS.KeyValue(ctx, "OZMAP_SYNC_RUNS")
	if err != nil {
		t.Fatal(err)
	}
	// Consumers merge their counts every few seconds; the last merge is at
	// their shutdown, which drain waited for.
	e, err := kv.Get(ctx, runreport.LastKey)
	if err != nil {
		t.Fatal(err)
	}
	var r runreport.Report
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func boxStatus(t *testing.T, ctx context.Context, env *rehearsal.Env, id string) boxstatus.Status {
	t.Helper()
	kv, err := env.JS.KeyValue(ctx, boxstatus.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	s, err := boxstatus.Get(ctx, kv, id)
	if err != nil {
		t.Fatalf("status of box %s: %v", id, err)
	}
	return s
}

// cliSubscribed reports whether a NATS CLI connection holds a subscription.
func cliSubscribed(env *rehearsal.Env) bool {
	cz, err := env.Server.Connz(&server.ConnzOptions{})
	if err != nil {
		return false
	}
	for _, c := range cz.Conns {
		if strings.Contains(c.Name, "NATS CLI") && c.NumSubs > 0 {
			return true
		}
	}
	return false
}
