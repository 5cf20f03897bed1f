package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/consumer/replay"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/config"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/telemetry"
)

// runReplay is `consumer replay`: it needs only the NATS settings.
func runReplay(ctx context.Context, args []string, lookup func(string) (string, bool), stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("consumer replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	boxID := fs.String("box", "", "replay only the dead letter of this OZmap box id")
	reason := fs.String("reason", "", "replay only dead letters whose reason, kind or error contains this text")
	dry := fs.Bool("dry-run", false, "list what would be moved, move nothing")
	since := fs.Duration("since", 0, "instead of the DLQ, republish every box the work stream received in this past window (e.g. 24h)")
	runID := fs.String("run", "", "instead of the DLQ, republish the boxes of this sync run id")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: consumer replay [-box ID] [-reason TEXT] [-dry-run]      move dead letters back to work")
		fmt.Fprintln(stderr, "       consumer replay -since 24h | -run RUN_ID [-dry-run]     republish a past sync from OZMAP_BOXES")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("replay: unexpected argument %q", fs.Arg(0))
	}
	fromWork := *since > 0 || *runID != ""
	if fromWork && (*boxID != "" || *reason != "") {
		return errors.New("replay: -since/-run replay a past sync from the work stream; -box/-reason select dead letters: use one or the other")
	}
	var cfg struct {
		NATS config.NATS
		Log  config.Log
	}
	if err := config.LoadInto(ctx, &cfg, lookup); err != nil {
		return err
	}
	log := telemetry.NewLogger(stderr, cfg.Log.Format, slog.LevelWarn, "consumer-replay")
	cfg.NATS.Embedded = false // replay talks to the running deployment's server
	conn, err := natsx.Open(ctx, cfg.NATS, "ozmap-sytex-replay", natsx.TopologyFrom(cfg.NATS, 0), log)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	if fromWork {
		n, err := replay.FromWork(ctx, conn.JS, *since, *runID, *dry, stdout)
		verb := "republished"
		if *dry {
			verb = "would republish"
		}
		fmt.Fprintf(stdout, "%s %d boxes from %s\n", verb, n, natsx.WorkStream)
		return err
	}
	rep, err := replay.FromDLQ(ctx, conn.JS, replay.Filter{BoxID: *boxID, Reason: *reason, DryRun: *dry}, stdout)
	if *dry {
		fmt.Fprintf(stdout, "dead letters matching: %d; %d would move, %d stay (not replayable)\n", rep.Matching, rep.Matching-rep.Refused, rep.Refused)
	} else {
		fmt.Fprintf(stdout, "dead letters matching: %d; moved %d to %s, %d stay (not replayable)\n", rep.Matching, rep.Moved, natsx.WorkStream, rep.Refused)
	}
	return err
}
