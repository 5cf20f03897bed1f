// Package upsert makes one Sytex network element match one OZmap box: find
// it by exact name, create it when missing, patch only what differs, and
// write nothing when nothing differs. Retries, the circuit breaker, acking
// and dead-lettering wrap around it (package worker); this is the core.
package upsert

import (
	"context"
	"errors"
	"fmt"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/box"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/sytex"
)

// Outcome says what an upsert did in Sytex.
type Outcome string

const (
	Created   Outcome = "created"
	Updated   Outcome = "updated"
	Unchanged Outcome = "unchanged"
	// With DryRun: what the upsert would have done, with nothing written.
	WouldCreate Outcome = "would-create"
	WouldUpdate Outcome = "would-update"
)

// Result is an upsert's outcome and the element it concerned.
type Result struct {
	Outcome   Outcome
	ElementID int64
	// Changed lists the fields written on an update ("ne_type", "coordinates").
	Changed []string
}

// Sytex is what the upsert needs from the Sytex client.
type Sytex interface {
	FindByName(ctx context.Context, name string) ([]sytex.Element, error)
	Create(ctx context.Context, r sytex.CreateRequest) (sytex.Element, error)
	Update(ctx context.Context, id int64, p sytex.Patch) (sytex.Element, error)
}

// ErrUnmappedType is returned for a box whose type has no ne_type in
// SYTEX_NE_TYPE_MAP when SYTEX_NE_TYPE_DEFAULT is not set. It is permanent
// for the box until the configuration changes (then replay it).
var ErrUnmappedType = errors.New("no Sytex ne_type for this box type")

// Upserter upserts boxes.
type Upserter struct {
	Sytex         Sytex
	NETypes       map[string]int64 // OZmap box-type code → Sytex ne_type id
	NETypeDefault int64            // for a missing or unmapped type; 0 = none
	// DryRun computes the outcome without writing to Sytex: searches run,
	// creates and updates are reported as WouldCreate and WouldUpdate.
	DryRun bool
}

// NEType resolves a box type code to a Sytex ne_type id.
func (u *Upserter) NEType(code string) (int64, error) {
	if id, ok := u.NETypes[code]; ok && code != "" {
		return id, nil
	}
	if u.NETypeDefault > 0 {
		return u.NETypeDefault, nil
	}
	if code == "" {
		return 0, fmt.Errorf("%w: the box has no type in OZmap and SYTEX_NE_TYPE_DEFAULT is not set", ErrUnmappedType)
	}
	return 0, fmt.Errorf("%w: box type %q is not in SYTEX_NE_TYPE_MAP and SYTEX_NE_TYPE_DEFAULT is not set", ErrUnmappedType, code)
}

// Upsert makes Sytex match b. When several elements already carry the name
// (Sytex does not enforce unique names), the one with the lowest id is the
// box's element and the others are left alone: the sync never creates a
// second one, and never deletes.
func (u *Upserter) Upsert(ctx context.Context, b box.Box) (Result, error) {
	return u.UpsertChecked(ctx, b, nil)
}

// UpsertChecked is Upsert with beforeWrite called just before a create or an
// update, or where a dry run would make one (not when nothing differs); an
// error from it stops the upsert with nothing written. The consumer checks there that the box is still current
// on the stream: only a write can put stale data in Sytex, so an unchanged
// box (most of them) costs no check.
func (u *Upserter) UpsertChecked(ctx context.Context, b box.Box, beforeWrite func(context.Context) error) (Result, error) {
	check := func() error {
		if beforeWrite == nil {
			return nil
		}
		return beforeWrite(ctx) // in a dry run too: a stale version is not counted
	}
	neType, err := u.NEType(b.TypeCode)
	if err != nil {
		return Result{}, err
	}
	found, err := u.Sytex.FindByName(ctx, b.Name)
	if err != nil {
		return Result{}, err
	}
	want := sytex.Coordinates{Latitude: b.Latitude, Longitude: b.Longitude}
	if len(found) == 0 {
		if err := check(); err != nil {
			return Result{}, err
		}
		if u.DryRun {
			return Result{Outcome: WouldCreate}, nil
		}
		e, err := u.Sytex.Create(ctx, sytex.CreateRequest{
			Name: b.Name, Code: b.Name, NETypeID: neType, Latitude: b.Latitude, Longitude: b.Longitude,
		})
		if err != nil {
			return Result{}, err
		}
		return Result{Outcome: Created, ElementID: e.ID}, nil
	}
	e := found[0]
	for _, f := range found[1:] {
		if f.ID < e.ID {
			e = f
		}
	}
	var p sytex.Patch
	var changed []string
	if e.NETypeID != neType {
		p.NETypeID = &neType
		changed = append(changed, "ne_type")
	}
	if have, ok := e.Location(); !ok || !have.Equal(want) {
		p.Coordinates = &want
		changed = append(changed, "coordinates")
	}
	if len(changed) == 0 {
		return Result{Outcome: Unchanged, ElementID: e.ID}, nil
	}
	if err := check(); err != nil {
		return Result{}, err
	}
	if u.DryRun {
		return Result{Outcome: WouldUpdate, ElementID: e.ID, Changed: changed}, nil
	}
	if _, err := u.Sytex.Update(ctx, e.ID, p); err != nil {
		return Result{}, err
	}
	return Result{Outcome: Updated, ElementID: e.ID, Changed: changed}, nil
}
