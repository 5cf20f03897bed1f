// Command demo runs the whole pipeline on this machine with nothing but Go:
// an embedded JetStream server, the OZmap and Sytex simulators seeded with a
// realistic night (some boxes "In project", some already in Sytex, some
// changed, a few bad rows), `producer -once`, and two consumers. It prints
// what happened and exits 0 only if Sytex ends exactly as it should.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/rehearsal"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/scenario"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding the producer and consumer binaries (make build)")
	data := flag.String("data", "", "NATS data directory (default: a temporary directory, removed at exit)")
	verbose := flag.Bool("v", false, "print the programs' logs")
	flag.Parse()
	if err := demo(*bin, *data, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func demo(bin, data string, verbose bool) error {
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

	for round := 1; round <= 2; round++ {
		env.Sytex.ResetCounts()
		what := "first sync"
		if round == 2 {
			what = "second sync, nothing changed in OZmap"
		}
		fmt.Printf("== %s ==\n", what)
		out, err := env.Produce(ctx)
		fmt.Print("producer -once: " + out)
		if err != nil {
			return fmt.Errorf("producer -once failed: %v\n%s", err, env.Logs())
		}
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
		n := env.Sytex.Counts()
		fmt.Printf("2 consumers: Sytex requests %d (searches %d, creates %d, updates %d)\n", n.Total, n.Search, n.Create, n.Update)
		if round == 2 && n.Create+n.Update > 0 {
			return fmt.Errorf("second sync wrote to Sytex (%d creates, %d updates); want none", n.Create, n.Update)
		}
		fmt.Println()
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
	return nil
}
