// Command demo runs the whole pipeline on this machine with nothing but Go:
// an embedded JetStream server, the OZmap and Sytex simulators seeded with a
// realistic night (some boxes "In project", some already in Sytex, some
// changed, a few bad rows), `producer -once`, and two consumers: first in dry
// run, then for real, then a second sync. It prints what happened and exits 0
// only if Sytex ends exactly as it should.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/rehearsal"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/runreport"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/scenario"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding the producer and consumer binaries (make build)")
	data := flag.String("data", "", "NATS data directory (default: a temporary directory, removed at exit)")
	verbose := flag.Bool("v", false, "print the programs' logs")
	keep := flag.Bool("keep", false, "after the demo, keep NATS and the simulators running and print the environment to try the README's commands against them (Ctrl-C ends)")
	flag.Parse()
	if err := demo(*bin, *data, *verbose, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func demo(bin, data string, verbose, keep bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if data == "" {
		d, err := os.MkdirTemp("", "ozmap-sytex-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		data = d
	}
	bin, _ = filepath.Abs(bin)
	env, err := rehearsal.Start(bin, data)
	if err != nil {
		return err
	}
	defer env.Close()
	defer func() {
		if verbose {
			fmt.Println("\n--- program logs ---\n" + env.Logs())
		}
	}()
	ex := scenario.Seed(env.OZmap, env.Sytex, scenario.Demo, 42)
	fmt.Printf("OZmap simulator %s: %d boxes (%d In project, %d invalid, %d duplicate name)\n",
		env.OZmap.URL, scenario.Demo.Boxes, len(ex.InProject), len(ex.Invalid), len(ex.Losers))
	fmt.Printf("Sytex simulator %s: %d network elements already there (%d identical, %d stale, %d near-miss names)\n",
		env.Sytex.URL, len(env.Sytex.Elements()), len(ex.Unchanged), len(ex.Updated), len(ex.NearMisses))
	fmt.Printf("JetStream: embedded server %s, data in %s\n\n", env.Server.ClientURL(), data)

	runs, err := runreport.Open(ctx, env.JS, 1)
	if err != nil {
		return err
	}

	// A first rollout: consumers with CONSUMER_DRY_RUN=true write nothing
	// and record what they would do.
	fmt.Println("== dry run (CONSUMER_DRY_RUN=true) ==")
	env.Sytex.ResetCounts()
	env.Extra = map[string]string{"CONSUMER_DRY_RUN": "true"}
	out, err := env.Produce(ctx)
	fmt.Print("producer -once: " + out)
	if err != nil {
		return fmt.Errorf("producer -once failed: %v\n%s", err, env.Logs())
	}
	if err := consume(ctx, env); err != nil {
		return err
	}
	last, err := runs.Last(ctx)
	if err != nil {
		return fmt.Errorf("run report: %w", err)
	}
	n := env.Sytex.Counts()
	fmt.Printf("2 consumers: Sytex requests %d (searches %d, creates %d, updates %d)\n", n.Total, n.Search, n.Create, n.Update)
	if last.DryRun == nil {
		return fmt.Errorf("the run report has no dry-run counts")
	}
	fmt.Printf("run report (nats kv get --raw OZMAP_SYNC_RUNS last), dry_run: would create %d, would update %d, unchanged %d\n\n",
		last.DryRun.WouldCreate, last.DryRun.WouldUpdate, last.DryRun.Unchanged)
	if n.Create+n.Update > 0 {
		return fmt.Errorf("dry run wrote to Sytex (%d creates, %d updates)", n.Create, n.Update)
	}

	// For real: replay that run from the work stream, as the README says.
	fmt.Println("== first sync: consumer replay -run " + last.RunID + " ==")
	env.Sytex.ResetCounts()
	env.Extra = nil
	replay := exec.CommandContext(ctx, filepath.Join(bin, "consumer"), "replay", "-run", last.RunID)
	replay.Env = env.Environ()
	if out, err := replay.CombinedOutput(); err != nil {
		return fmt.Errorf("consumer replay -run: %v\n%s", err, out)
	}
	if err := consume(ctx, env); err != nil {
		return err
	}
	if last, err = runs.Last(ctx); err != nil {
		return fmt.Errorf("run report: %w", err)
	}
	n = env.Sytex.Counts()
	fmt.Printf("2 consumers: Sytex requests %d (searches %d, creates %d, updates %d)\n", n.Total, n.Search, n.Create, n.Update)
	fmt.Printf("run report, synced: created %d, updated %d, unchanged %d, dead-lettered %d\n\n",
		last.Synced.Created, last.Synced.Updated, last.Synced.Unchanged, last.Synced.DeadLettered)

	fmt.Println("== second sync, nothing changed in OZmap ==")
	env.Sytex.ResetCounts()
	out, err = env.Produce(ctx)
	fmt.Print("producer -once: " + out)
	if err != nil {
		return fmt.Errorf("producer -once failed: %v\n%s", err, env.Logs())
	}
	if err := consume(ctx, env); err != nil {
		return err
	}
	n = env.Sytex.Counts()
	fmt.Printf("2 consumers: Sytex requests %d (searches %d, creates %d, updates %d)\n\n", n.Total, n.Search, n.Create, n.Update)
	if n.Create+n.Update > 0 {
		return fmt.Errorf("second sync wrote to Sytex (%d creates, %d updates); want none", n.Create, n.Update)
	}

	dl, err := env.DeadLetters(ctx)
	if err != nil {
		return err
	}
	fmt.Println("== dead letters (nats stream view OZMAP_BOXES_DLQ) ==")
	kinds := make([]string, 0, len(dl))
	for k := range dl {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Printf("  %-15s %d  %s\n", k, len(dl[k]), strings.Join(dl[k], " "))
	}

	fmt.Println("\n== check ==")
	problems := ex.Check(env.Sytex)
	want := len(ex.Invalid) + len(ex.Losers) + len(ex.Rejected)
	got := 0
	for _, ids := range dl {
		got += len(ids)
	}
	if got != want {
		problems = append(problems, fmt.Sprintf("dead letters: %d, want %d", got, want))
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Println("  FAIL", p)
		}
		return fmt.Errorf("%d problems", len(problems))
	}
	fmt.Printf("  OK: Sytex holds exactly the %d eligible boxes (%d created, %d updated, %d unchanged), no duplicates, near misses untouched, nothing In project; %d dead letters with reasons\n",
		len(ex.Want), len(ex.Created), len(ex.Updated), len(ex.Unchanged), got)
	if keep {
		return serve(env)
	}
	return nil
}

// consume runs two consumers until the backlog is empty and stops them.
func consume(ctx context.Context, env *rehearsal.Env) error {
	var consumers []*rehearsal.Consumer
	for range 2 {
		c, err := env.StartConsumer(ctx)
		if err != nil {
			return err
		}
		consumers = append(consumers, c)
	}
	werr := env.WaitIdle(ctx)
	for _, c := range consumers {
		if err := c.Stop(30 * time.Second); err != nil {
			return fmt.Errorf("consumer exit: %v", err)
		}
	}
	if werr != nil {
		return fmt.Errorf("consumers did not finish: %w\n%s", werr, env.Logs())
	}
	return nil
}

// serve keeps the environment up for an operator to try the README's
// commands (bin/producer -once, bin/consumer replay, the nats CLI) until
// Ctrl-C.
func serve(env *rehearsal.Env) error {
	fmt.Println("\n== kept running: paste these into another shell, then try the README's commands ==")
	vars := env.Environ()
	sort.Strings(vars)
	for _, kv := range vars {
		if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "HTTP_ADDR=") {
			fmt.Println("export " + shellQuote(kv))
		}
	}
	fmt.Println("# e.g.  bin/producer -once;  bin/consumer &;  nats kv get --raw OZMAP_SYNC_RUNS last;  bin/consumer replay -dry-run")
	fmt.Println("Ctrl-C stops NATS and the simulators.")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return nil
}

// shellQuote quotes NAME=value for a POSIX shell.
func shellQuote(kv string) string {
	name, value, _ := strings.Cut(kv, "=")
	return name + "='" + strings.ReplaceAll(value, "'", `'\''`) + "'"
}
