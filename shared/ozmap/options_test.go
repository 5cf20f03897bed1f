package ozmap_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap/ozmaptest"
)

func TestProjectIDsValidation(t *testing.T) {
	good := "5d9f3ff9200141000647f814"
	tests := []struct {
		name string
		ids  []string
		bad  string // the value the error must quote; "" when valid
	}{
		{"none", nil, ""},
		{"one", []string{good}, ""},
		{"upper case and spaces", []string{" 5D9F3FF9200141000647F814 "}, ""},
		{"too short", []string{good, "abc"}, `ProjectIDs[1] "abc"`},
		{"not hex", []string{"5d9f3ff9200141000647f81z"}, `ProjectIDs[0] "5d9f3ff9200141000647f81z"`},
		{"too long", []string{good + "0"}, `ProjectIDs[0] "5d9f3ff9200141000647f8140"`},
		{"empty entry", []string{good, ""}, `ProjectIDs[1] ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ozmap.New(ozmap.Options{BaseURL: "https://x", APIKey: apiKey, ProjectIDs: tt.ids})
			if tt.bad == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ozmap.ErrInvalidProjectID) || !strings.Contains(err.Error(), tt.bad) || !strings.Contains(err.Error(), "24 hexadecimal digits") {
				t.Fatalf("err = %v, want ErrInvalidProjectID naming %s", err, tt.bad)
			}
			assertNoKey(t, err.Error())
		})
	}
}

// projectsOf returns the simulator's distinct projects, sorted.
func projectsOf(s *ozmaptest.Server) []string {
	var ps []string
	for _, b := range s.Boxes() {
		if !slices.Contains(ps, b.Project) {
			ps = append(ps, b.Project)
		}
	}
	slices.Sort(ps)
	return ps
}

// wantIDs lists the ids of the simulator's boxes keep accepts, sorted.
func wantIDs(s *ozmaptest.Server, keep func(ozmaptest.Box) bool) []string {
	var out []string
	for _, b := range s.Boxes() {
		if keep(b) {
			out = append(out, b.ID)
		}
	}
	return out
}

func TestProjectIDsAgainstSimulator(t *testing.T) {
	tests := []struct {
		name string
		opts []ozmaptest.Option
	}{
		{"server caps limit", []ozmaptest.Option{ozmaptest.WithMaxPageSize(7)}},
		{"no hasNextPage", []ozmaptest.Option{ozmaptest.WithMaxPageSize(7), ozmaptest.WithoutNextPage()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ozmaptest.NewServer(apiKey, tt.opts...)
			defer s.Close()
			s.PutBoxes(ozmaptest.GenerateBoxes(120, 5, ozmaptest.DefaultBoxTypes()))
			ps := projectsOf(s)
			if len(ps) != 3 {
				t.Fatalf("generated %d projects, want 3", len(ps))
			}
			chosen := []string{ps[0], strings.ToUpper(ps[2])} // upper case is normalized
			c := newClient(t, s.URL, func(o *ozmap.Options) { o.ProjectIDs = chosen; o.PageSize = 500 })

			boxes, bad, err := collect(testCtx(t), c)
			if err != nil || len(bad) > 0 {
				t.Fatalf("err %v bad %v", err, bad)
			}
			want := wantIDs(s, func(b ozmaptest.Box) bool { return b.Implanted && (b.Project == ps[0] || b.Project == ps[2]) })
			if got := ids(boxes); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("got %d boxes, want the %d implanted ones of projects 0 and 2 exactly once", len(got), len(want))
			}
			wantFilter := fmt.Sprintf(`[{"property":"implanted","operator":"=","value":true},{"property":"project","operator":"in","value":[%q,%q]}]`, ps[0], ps[2])
			for _, f := range s.Filters() {
				if f != wantFilter {
					t.Fatalf("filter sent %s\nwant %s", f, wantFilter)
				}
			}
		})
	}
}

func TestProjectIDsRecheckedClientSide(t *testing.T) {
	const (
		p1 = "64c000000000000000000001"
		p2 = "64c000000000000000000002"
	)
	s := ozmaptest.NewServer(apiKey, ozmaptest.WithIgnoreFilter(), ozmaptest.WithMaxPageSize(2))
	defer s.Close()
	s.PutBox(ozmaptest.Box{ID: "b1", Implanted: true, Project: p1})
	s.PutBox(ozmaptest.Box{ID: "b2", Implanted: true, Project: p2})
	s.PutBox(ozmaptest.Box{ID: "b3", Implanted: false, Project: p1})
	s.PutBox(ozmaptest.Box{ID: "b4", Implanted: true})
	s.SetRawRows([]json.RawMessage{
		json.RawMessage(`{"id":"r1","implanted":"yes","project":"` + p2 + `"}`),                  // bad row elsewhere: dropped
		json.RawMessage(`{"id":"r2","implanted":"yes","project":{"_id":"` + p1 + `"}}`),          // bad row of p1: reported
		json.RawMessage(`{"id":"r3","implanted":true,"project":{"id":"` + p1 + `","name":"x"}}`), // populated project
		json.RawMessage(`{"id":"r4","implanted":"yes"}`),                                         // no project to tell: reported
	})
	boxes, bad, err := collect(testCtx(t), newClient(t, s.URL, func(o *ozmap.Options) { o.ProjectIDs = []string{p1} }))
	if err != nil {
		t.Fatal(err)
	}
	// The implanted check stays the caller's (b3 comes through with
	// Implanted=false); other projects never come through.
	if got := strings.Join(ids(boxes), ","); got != "b1,b3,r3" {
		t.Errorf("boxes %s, want b1,b3,r3", got)
	}
	var badIDs []string
	for _, r := range bad {
		var o struct{ ID string }
		_ = json.Unmarshal(r.Raw, &o)
		badIDs = append(badIDs, o.ID)
	}
	if got := strings.Join(badIDs, ","); got != "r2,r4" {
		t.Errorf("bad rows %s, want r2,r4", got)
	}
}

func TestProjectIDsSplitOverSeveralListings(t *testing.T) {
	s := ozmaptest.NewServer(apiKey, ozmaptest.WithMaxPageSize(4))
	defer s.Close()
	s.PutBoxes(ozmaptest.GenerateBoxes(60, 9, nil))
	ps := projectsOf(s)
	// 150 ids: the real ones at positions 0 and 149, so they land in
	// different listings of at most 100 ids.
	var chosen []string
	for i := 0; i < 148; i++ {
		chosen = append(chosen, fmt.Sprintf("%024x", 0xdead0000+i))
	}
	chosen = append([]string{ps[1]}, append(chosen, ps[2])...)
	c := newClient(t, s.URL, func(o *ozmap.Options) { o.ProjectIDs = chosen })
	boxes, _, err := collect(testCtx(t), c)
	if err != nil {
		t.Fatal(err)
	}
	got := ids(boxes)
	slices.Sort(got)
	want := wantIDs(s, func(b ozmaptest.Box) bool { return b.Implanted && (b.Project == ps[1] || b.Project == ps[2]) })
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("got %d boxes, want %d", len(got), len(want))
	}
	var perListing []int
	for _, f := range s.Filters() {
		var conds []struct {
			Property string
			Value    json.RawMessage
		}
		if err := json.Unmarshal([]byte(f), &conds); err != nil || len(conds) != 2 {
			t.Fatalf("filter %s", f)
		}
		var vals []string
		_ = json.Unmarshal(conds[1].Value, &vals)
		perListing = append(perListing, len(vals))
	}
	if !slices.Contains(perListing, 100) || !slices.Contains(perListing, 50) || slices.Max(perListing) > ozmap.MaxProjectIDsPerQuery {
		t.Errorf("ids per listing request: %v", perListing)
	}
}

func TestOnRequest(t *testing.T) {
	type call struct {
		method, route string
		status        int
	}
	var (
		mu    sync.Mutex
		calls []call
	)
	record := func(o *ozmap.Options) {
		o.OnRequest = func(method, route string, status int, d time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			if d < 0 {
				t.Errorf("negative duration %v", d)
			}
			calls = append(calls, call{method, route, status})
		}
	}
	take := func() []call {
		mu.Lock()
		defer mu.Unlock()
		out := calls
		calls = nil
		return out
	}

	s := ozmaptest.NewServer(apiKey, ozmaptest.WithMaxPageSize(2))
	defer s.Close()
	s.PutBox(ozmaptest.Box{ID: "b1", Implanted: true})
	s.PutBox(ozmaptest.Box{ID: "b2", Implanted: true})
	s.PutBox(ozmaptest.Box{ID: "b3", Implanted: true})
	s.PutBoxType(ozmaptest.BoxType{Code: "CTO"})
	s.FailNext(503, 1)
	c := newClient(t, s.URL, record)
	if _, _, err := collect(testCtx(t), c); err != nil {
		t.Fatal(err)
	}
	if _, err := c.BoxTypes(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	want := []call{
		{"GET", "/api/v2/boxes", 503}, {"GET", "/api/v2/boxes", 200}, {"GET", "/api/v2/boxes", 200},
		{"GET", "/api/v2/box-types", 200},
	}
	if got := take(); !slices.Equal(got, want) {
		t.Errorf("calls %v\nwant %v", got, want)
	}

	// No answer at all: status 0, once per attempt.
	dead := ozmaptest.NewServer(apiKey)
	dead.Close()
	if _, _, err := collect(testCtx(t), newClient(t, dead.URL, record)); err == nil {
		t.Fatal("no error from a closed server")
	}
	want = []call{{"GET", ozmap.RouteBoxes, 0}, {"GET", ozmap.RouteBoxes, 0}, {"GET", ozmap.RouteBoxes, 0}}
	if got := take(); !slices.Equal(got, want) {
		t.Errorf("calls %v\nwant %v", got, want)
	}

	// A hostile answer is still one observed request with its status.
	srv, _ := handlerServer(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(401) })
	_, _, _ = collect(testCtx(t), newClient(t, srv.URL, record))
	if got := take(); !slices.Equal(got, []call{{"GET", ozmap.RouteBoxes, 401}}) {
		t.Errorf("calls %v", got)
	}
}

// OnBoxPage reports every page of boxes with its rows and the server's
// total, which is what the producer's progress and ETA are computed from.
func TestOnBoxPage(t *testing.T) {
	s := ozmaptest.NewServer(apiKey, ozmaptest.WithMaxPageSize(2))
	defer s.Close()
	for _, id := range []string{"b1", "b2", "b3", "b4", "b5"} {
		s.PutBox(ozmaptest.Box{ID: id, Implanted: true})
	}
	s.PutBox(ozmaptest.Box{ID: "b6", Implanted: false}) // filtered out by the server
	type page struct {
		n, rows int
		total   int64
	}
	var pages []page
	c := newClient(t, s.URL, func(o *ozmap.Options) {
		o.OnBoxPage = func(n, rows int, total int64) { pages = append(pages, page{n, rows, total}) }
	})
	if _, _, err := collect(testCtx(t), c); err != nil {
		t.Fatal(err)
	}
	if _, err := c.BoxTypes(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	want := []page{{1, 2, 5}, {2, 2, 5}, {3, 1, 5}}
	if !slices.Equal(pages, want) {
		t.Fatalf("pages %v, want %v (box-type pages are not box pages)", pages, want)
	}
}
