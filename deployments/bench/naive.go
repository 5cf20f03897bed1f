package main

import (
	"context"
	"fmt"
	"time"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/consumer/upsert"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/box"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/httpx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/rehearsal"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/scenario"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/sytex"
)

// NaiveResult is the sequential baseline.
type NaiveResult struct {
	Boxes       int     `json:"boxes"`
	LatencyMS   float64 `json:"sytex_latency_ms"`
	Seconds     float64 `json:"seconds"`
	BoxesPerSec float64 `json:"boxes_per_sec"`
	RequestsPer float64 `json:"requests_per_box"`
	Check       string  `json:"check"`
}

// runNaive is the sync a user would otherwise write: one loop that pages
// OZmap and, for each box, searches Sytex by name and writes what differs,
// one request at a time. Same clients, same decision (package upsert), same
// simulators and latency as the pipeline; no JetStream, no concurrency.
func runNaive(ctx context.Context, o opts, n int, latency time.Duration, seed int64) (NaiveResult, error) {
	res := NaiveResult{Boxes: n, LatencyMS: float64(latency) / float64(time.Millisecond)}
	env, cleanup, err := newEnv(o)
	if err != nil {
		return res, err
	}
	defer cleanup()
	ex := scenario.Seed(env.OZmap, env.Sytex, Realistic(n), seed)
	hc, err := httpx.New(20*time.Second, "", 1)
	if err != nil {
		return res, err
	}
	oz, err := ozmap.New(ozmap.Options{BaseURL: env.OZmap.URL, APIKey: rehearsal.OZmapKey, PageSize: ozmap.DefaultPageSize, HTTPClient: hc})
	if err != nil {
		return res, err
	}
	sy, err := sytex.New(sytex.Options{BaseURL: env.Sytex.URL, Token: rehearsal.SytexToken, OrganizationID: rehearsal.SytexOrg, HTTPClient: hc})
	if err != nil {
		return res, err
	}
	up := upsert.Upserter{Sytex: sy, NETypes: scenario.NETypes}
	env.Sytex.SetLatency(latency)

	start := time.Now()
	types, err := oz.BoxTypes(ctx)
	if err != nil {
		return res, err
	}
	done := 0
	for row, err := range oz.Boxes(ctx) {
		if err != nil {
			return res, err
		}
		if row.Err != nil || !row.Box.Implanted {
			continue
		}
		b := box.Box{Schema: box.SchemaVersion, ID: row.Box.ID, Name: row.Box.Name, TypeCode: row.Box.TypeCode,
			Latitude: row.Box.Lat, Longitude: row.Box.Lng, UpdatedAt: row.Box.UpdatedAt}
		if b.TypeCode == "" {
			b.TypeCode = types[row.Box.TypeID]
		}
		if _, err := up.Upsert(ctx, b); err != nil {
			return res, fmt.Errorf("naive upsert of %s: %w", b.Name, err)
		}
		done++
	}
	elapsed := time.Since(start)
	if done != n {
		return res, fmt.Errorf("naive sync upserted %d boxes, want %d", done, n)
	}
	res.Seconds = elapsed.Seconds()
	res.BoxesPerSec = float64(n) / res.Seconds
	res.RequestsPer = float64(env.Sytex.Counts().Total) / float64(n)
	res.Check = "ok"
	if problems := ex.Check(env.Sytex); len(problems) > 0 {
		res.Check = fmt.Sprintf("%d problems, e.g. %s", len(problems), problems[0])
	}
	return res, nil
}
