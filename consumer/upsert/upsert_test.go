package upsert

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/box"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/sytex"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/sytex/sytextest"
)

func newUpserter(t *testing.T) (*Upserter, *sytextest.Server) {
	t.Helper()
	sy := sytextest.NewServer("tok", 9, sytextest.WithDefaultPageSize(2), sytextest.WithMaxPageSize(2))
	t.Cleanup(sy.Close)
	c, err := sytex.New(sytex.Options{BaseURL: sy.URL, Token: "tok", OrganizationID: 9, PageSize: 2, HTTPClient: &http.Client{Timeout: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	return &Upserter{Sytex: c, NETypes: map[string]int64{"CTO": 321, "CEO": 322}}, sy
}

func b(name, code string, lat, lng float64) box.Box {
	return box.Box{Schema: 1, ID: "000000000000000000000001", Name: name, TypeCode: code, Latitude: lat, Longitude: lng}
}

func TestUpsertOutcomes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, sy := newUpserter(t)
	// Near misses a substring search returns, spread over several pages.
	for _, n := range []string{"CTO-1-OLD", "XCTO-1", "cto-1", "CTO-10"} {
		sy.Seed(sytextest.Element{Name: n, Code: n, NEType: 322, Latitude: -1, Longitude: -1, HasCoords: true})
	}
	r, err := u.Upsert(ctx, b("CTO-1", "CTO", -27.5866041, -48.5274))
	if err != nil || r.Outcome != Created {
		t.Fatalf("first upsert: %+v, %v; want created", r, err)
	}
	got := sy.ElementsByName("CTO-1")
	if len(got) != 1 || got[0].Code != "CTO-1" || got[0].NEType != 321 || got[0].Latitude != -27.586604 {
		t.Fatalf("created %+v", got)
	}
	sy.ResetCounts()
	// Same data within 1e-6 degrees: searched, nothing written.
	r, err = u.Upsert(ctx, b("CTO-1", "CTO", -27.5866043, -48.5274004))
	if err != nil || r.Outcome != Unchanged || sy.Counts().Create+sy.Counts().Update != 0 {
		t.Fatalf("unchanged upsert: %+v, %v, counts %+v", r, err, sy.Counts())
	}
	// Type changed: PATCH, same element.
	r, err = u.Upsert(ctx, b("CTO-1", "CEO", -27.586604, -48.5274))
	if err != nil || r.Outcome != Updated || len(r.Changed) != 1 || r.Changed[0] != "ne_type" || r.ElementID != got[0].ID {
		t.Fatalf("type change: %+v, %v", r, err)
	}
	if e, _ := sy.Element(got[0].ID); e.NEType != 322 {
		t.Fatalf("ne_type not patched: %+v", e)
	}
	// Near misses untouched.
	for _, n := range []string{"CTO-1-OLD", "XCTO-1", "cto-1", "CTO-10"} {
		if e := sy.ElementsByName(n); len(e) != 1 || e[0].NEType != 322 || e[0].Latitude != -1 {
			t.Fatalf("near miss %q touched: %+v", n, e)
		}
	}
}

func TestUpsertPicksLowestIDAmongDuplicates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, sy := newUpserter(t)
	first := sy.Seed(sytextest.Element{Name: "CEO-9", Code: "CEO-9", NEType: 322, Latitude: -1, Longitude: -1, HasCoords: true})
	second := sy.Seed(sytextest.Element{Name: "CEO-9", Code: "CEO-9", NEType: 322, Latitude: -2, Longitude: -2, HasCoords: true})
	r, err := u.Upsert(ctx, b("CEO-9", "CEO", -27, -48))
	if err != nil || r.Outcome != Updated || r.ElementID != first.ID {
		t.Fatalf("%+v, %v; want update of %d", r, err, first.ID)
	}
	if e, _ := sy.Element(second.ID); e.Latitude != -2 {
		t.Fatalf("the other duplicate was touched: %+v", e)
	}
	if n := len(sy.ElementsByName("CEO-9")); n != 2 {
		t.Fatalf("%d elements named CEO-9, want still 2", n)
	}
}

func TestUnmappedTypeIsPermanent(t *testing.T) {
	u, sy := newUpserter(t)
	_, err := u.Upsert(context.Background(), b("CTX-1", "CTX", -27, -48))
	if !errors.Is(err, ErrUnmappedType) || sy.Counts().Total != 0 {
		t.Fatalf("err = %v, requests %d; want ErrUnmappedType before any request", err, sy.Counts().Total)
	}
	u.NETypeDefault = 323
	if r, err := u.Upsert(context.Background(), b("CTX-1", "", -27, -48)); err != nil || r.Outcome != Created {
		t.Fatalf("with a default: %+v, %v", r, err)
	}
	if e := sy.ElementsByName("CTX-1"); len(e) != 1 || e[0].NEType != 323 {
		t.Fatalf("created %+v", e)
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	u, sy := newUpserter(t)
	u.DryRun = true
	sy.Seed(sytextest.Element{Name: "CTO-2", Code: "CTO-2", NEType: 322, Latitude: -1, Longitude: -1, HasCoords: true})
	if r, err := u.Upsert(context.Background(), b("CTO-2", "CTO", -27, -48)); err != nil || r.Outcome != WouldUpdate || len(r.Changed) != 2 {
		t.Fatalf("%+v, %v", r, err)
	}
	if r, err := u.Upsert(context.Background(), b("CTO-3", "CTO", -27, -48)); err != nil || r.Outcome != WouldCreate {
		t.Fatalf("%+v, %v", r, err)
	}
	if c := sy.Counts(); c.Create+c.Update != 0 || len(sy.Elements()) != 1 {
		t.Fatalf("dry run wrote: %+v", c)
	}
}

// The consumer's "still current?" check runs only before a write, and an
// error from it writes nothing.
func TestBeforeWriteOnlyGuardsWrites(t *testing.T) {
	u, sy := newUpserter(t)
	sy.Seed(sytextest.Element{Name: "CTO-1", Code: "CTO-1", NEType: 321, Latitude: -27, Longitude: -48, HasCoords: true})
	calls := 0
	stale := errors.New("superseded")
	check := func(context.Context) error { calls++; return stale }
	ctx := context.Background()
	if r, err := u.UpsertChecked(ctx, b("CTO-1", "CTO", -27, -48), check); err != nil || r.Outcome != Unchanged || calls != 0 {
		t.Fatalf("unchanged: %+v, %v, %d checks", r, err, calls)
	}
	if _, err := u.UpsertChecked(ctx, b("CTO-1", "CTO", -28, -48), check); !errors.Is(err, stale) || calls != 1 {
		t.Fatalf("update: %v, %d checks", err, calls)
	}
	if _, err := u.UpsertChecked(ctx, b("CTO-2", "CTO", -28, -48), check); !errors.Is(err, stale) || calls != 2 {
		t.Fatalf("create: %v, %d checks", err, calls)
	}
	if c := sy.Counts(); c.Create+c.Update != 0 {
		t.Fatalf("wrote despite the check: %+v", c)
	}
}
