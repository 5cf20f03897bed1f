package ozmaptest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"
)

const key = "sim-key-0123456789"

type page struct {
	Total       int               `json:"total"`
	Count       int               `json:"count"`
	Start       int               `json:"start"`
	Limit       int               `json:"limit"`
	Rows        []json.RawMessage `json:"rows"`
	HasNextPage *bool             `json:"hasNextPage"`
	NextURL     *string           `json:"nextUrl"`
}

func get(t *testing.T, s *Server, auth, pathQuery string) (int, http.Header, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+pathQuery, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func getPage(t *testing.T, s *Server, pathQuery string) page {
	t.Helper()
	status, _, body := get(t, s, key, pathQuery)
	if status != http.StatusOK {
		t.Fatalf("GET %s: status %d: %s", pathQuery, status, body)
	}
	var p page
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("GET %s: %v: %s", pathQuery, err, body)
	}
	return p
}

func TestAuth(t *testing.T) {
	s := NewServer(key)
	defer s.Close()
	tests := []struct {
		auth string
		want int
	}{
		{key, 200},
		{"Bearer " + key, 200},
		{"", 401},
		{"wrong", 401},
		{"Bearer wrong", 401},
		{key + "x", 401},
	}
	for _, tt := range tests {
		status, _, body := get(t, s, tt.auth, "/api/v2/boxes")
		if status != tt.want {
			t.Errorf("auth %q: status %d, want %d", tt.auth, status, tt.want)
		}
		if status == 401 && string(body) != "{\"message\":\"Unauthorized\"}\n" {
			t.Errorf("401 body = %q", body)
		}
	}
	if got := s.Requests(); got != int64(len(tests)) {
		t.Errorf("Requests() = %d, want %d", got, len(tests))
	}
}

func TestPagingEnvelope(t *testing.T) {
	s := NewServer(key, WithMaxPageSize(10))
	defer s.Close()
	s.PutBoxes(GenerateBoxes(23, 1, DefaultBoxTypes()))

	p := getPage(t, s, "/api/v2/boxes?limit=500")
	if p.Total != 23 || p.Count != 10 || p.Limit != 10 || p.Start != 0 || len(p.Rows) != 10 {
		t.Fatalf("page 1 = total %d count %d limit %d start %d rows %d", p.Total, p.Count, p.Limit, p.Start, len(p.Rows))
	}
	if p.HasNextPage == nil || !*p.HasNextPage || p.NextURL == nil {
		t.Fatalf("page 1: hasNextPage/nextUrl missing")
	}
	var ids []string
	next := "/api/v2/boxes?limit=500"
	for pages := 0; next != ""; pages++ {
		if pages > 5 {
			t.Fatal("nextUrl chain does not end")
		}
		p := getPage(t, s, next)
		for _, r := range p.Rows {
			var b struct {
				ID     string    `json:"id"`
				Coords []float64 `json:"coords"`
				Lat    float64   `json:"lat"`
				Lng    float64   `json:"lng"`
			}
			if err := json.Unmarshal(r, &b); err != nil {
				t.Fatal(err)
			}
			if len(b.Coords) != 2 || b.Coords[0] != b.Lng || b.Coords[1] != b.Lat {
				t.Errorf("row %s: coords %v lat %v lng %v: want coords [lng, lat]", b.ID, b.Coords, b.Lat, b.Lng)
			}
			ids = append(ids, b.ID)
		}
		next = ""
		if *p.HasNextPage {
			next = *p.NextURL
		} else if p.NextURL != nil {
			t.Errorf("last page nextUrl = %q, want null", *p.NextURL)
		}
	}
	want := s.Boxes()
	if len(ids) != len(want) {
		t.Fatalf("got %d rows, want %d", len(ids), len(want))
	}
	for i := range ids {
		if ids[i] != want[i].ID {
			t.Fatalf("row %d id %s, want %s (rows must be ordered by id)", i, ids[i], want[i].ID)
		}
	}
}

func TestWithoutNextPage(t *testing.T) {
	s := NewServer(key, WithoutNextPage())
	defer s.Close()
	s.PutBoxes(GenerateBoxes(3, 1, nil))
	_, _, body := get(t, s, key, "/api/v2/boxes")
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"hasNextPage", "nextUrl"} {
		if _, ok := m[k]; ok {
			t.Errorf("%s present", k)
		}
	}
	for _, k := range []string{"total", "count", "start", "limit", "rows"} {
		if _, ok := m[k]; !ok {
			t.Errorf("%s missing", k)
		}
	}
	if p := getPage(t, s, "/api/v2/boxes?page=2"); len(p.Rows) != 0 || p.Start != 3 {
		t.Errorf("page past the end: %d rows, start %d", len(p.Rows), p.Start)
	}
}

func TestFilter(t *testing.T) {
	s := NewServer(key)
	defer s.Close()
	s.PutBox(Box{ID: "a1", Name: "CTO-1", Implanted: true, Project: "p1"})
	s.PutBox(Box{ID: "a2", Name: "CTO-2", Implanted: false, Project: "p1"})
	s.PutBox(Box{ID: "a3", Name: "CTO-3", Implanted: true, Project: "p2"})

	tests := []struct {
		filter string
		status int
		total  int
	}{
		{`[{"property":"implanted","operator":"=","value":true}]`, 200, 2},
		{`[{"property":"implanted","operator":"!=","value":true}]`, 200, 1},
		{`[{"property":"project","operator":"in","value":["p2","p9"]}]`, 200, 1},
		{`[{"property":"implanted","operator":"=","value":true},{"property":"project","operator":"=","value":"p1"}]`, 200, 1},
		{`[{"property":"name","operator":"=","value":"CTO-2"}]`, 200, 1},
		{`[{"property":"id","operator":"in","value":[]}]`, 200, 0},
		{`[]`, 200, 3},
		{`[{"property":"color","operator":"=","value":"red"}]`, 400, 0},
		{`[{"property":"name","operator":"like","value":"CTO"}]`, 400, 0},
		{`[{"property":"implanted","operator":"=","value":"yes"}]`, 400, 0},
		{`[{"property":"id","operator":"in","value":"a1"}]`, 400, 0},
		{`{"property":"implanted"}`, 400, 0},
		{`[{`, 400, 0},
	}
	for _, tt := range tests {
		status, _, body := get(t, s, key, "/api/v2/boxes?filter="+url.QueryEscape(tt.filter))
		if status != tt.status {
			t.Errorf("filter %s: status %d, want %d: %s", tt.filter, status, tt.status, body)
			continue
		}
		if status == 400 {
			var m struct{ Message string }
			if json.Unmarshal(body, &m) != nil || m.Message == "" {
				t.Errorf("filter %s: 400 body %q lacks message", tt.filter, body)
			}
			continue
		}
		var p page
		_ = json.Unmarshal(body, &p)
		if p.Total != tt.total {
			t.Errorf("filter %s: total %d, want %d", tt.filter, p.Total, tt.total)
		}
	}
}

func TestIgnoreFilter(t *testing.T) {
	s := NewServer(key, WithIgnoreFilter())
	defer s.Close()
	s.PutBox(Box{ID: "a1", Implanted: true})
	s.PutBox(Box{ID: "a2", Implanted: false})
	p := getPage(t, s, "/api/v2/boxes?filter="+url.QueryEscape(`[{"property":"implanted","operator":"=","value":true}]`))
	if p.Total != 2 {
		t.Errorf("total %d, want 2 (filter ignored)", p.Total)
	}
	if status, _, _ := get(t, s, key, "/api/v2/boxes?filter=%5B"); status != 400 {
		t.Errorf("malformed filter: status %d, want 400 even when ignoring filters", status)
	}
}

func TestFaults(t *testing.T) {
	s := NewServer(key)
	defer s.Close()

	s.FailNext(503, 2)
	for range 2 {
		status, h, _ := get(t, s, key, "/api/v2/boxes")
		if status != 503 || h.Get("Retry-After") != "1" {
			t.Errorf("injected: status %d Retry-After %q", status, h.Get("Retry-After"))
		}
	}
	if status, _, _ := get(t, s, key, "/api/v2/boxes"); status != 200 {
		t.Errorf("after FailNext: status %d", status)
	}
	s.FailNext(500, 1)
	if status, h, _ := get(t, s, key, "/api/v2/boxes"); status != 500 || h.Get("Retry-After") != "" {
		t.Errorf("500: status %d Retry-After %q", status, h.Get("Retry-After"))
	}

	s.SetOutage(true)
	for range 3 {
		if status, _, _ := get(t, s, key, "/api/v2/box-types"); status != 503 {
			t.Errorf("outage: status %d", status)
		}
	}
	s.SetOutage(false)

	if status, _, _ := get(t, s, key, "/api/v2/nothing"); status != 404 {
		t.Errorf("unknown path: status %d", status)
	}
	if status, _, _ := get(t, s, key, "/api/v2/boxes?page=0"); status != 400 {
		t.Errorf("page=0: status %d", status)
	}

	s.SetLatency(50 * time.Millisecond)
	start := time.Now()
	get(t, s, key, "/api/v2/boxes")
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("latency: answered in %v", d)
	}
}

func TestRawRowsAndBoxTypes(t *testing.T) {
	s := NewServer(key, WithMaxPageSize(2))
	defer s.Close()
	s.PutBox(Box{ID: "a1", Implanted: true})
	s.SetRawRows([]json.RawMessage{json.RawMessage(`{"id":42}`), json.RawMessage(`"x"`)})
	p := getPage(t, s, "/api/v2/boxes?page=2&filter="+url.QueryEscape(`[{"property":"implanted","operator":"=","value":true}]`))
	if p.Total != 3 || len(p.Rows) != 1 || string(p.Rows[0]) != `"x"` {
		t.Errorf("raw rows page 2: total %d rows %s", p.Total, p.Rows)
	}

	for _, bt := range DefaultBoxTypes() {
		s.PutBoxType(bt)
	}
	p = getPage(t, s, "/api/v2/box-types?limit=10&filter="+url.QueryEscape(`[{"property":"code","operator":"=","value":"CEO"}]`))
	if p.Total != 1 || len(p.Rows) != 1 {
		t.Fatalf("box types: total %d rows %d", p.Total, len(p.Rows))
	}
	var bt BoxType
	_ = json.Unmarshal(p.Rows[0], &bt)
	if bt.Code != "CEO" || bt.DefaultLevel != 2 {
		t.Errorf("box type = %+v", bt)
	}
}

func TestGenerateBoxes(t *testing.T) {
	a := GenerateBoxes(1000, 7, DefaultBoxTypes())
	b := GenerateBoxes(1000, 7, DefaultBoxTypes())
	notImplanted := 0
	ids := map[string]bool{}
	for i := range a {
		if a[i].ID != b[i].ID || a[i].Name != b[i].Name || a[i].Lat != b[i].Lat {
			t.Fatalf("box %d differs between runs with the same seed", i)
		}
		if len(a[i].ID) != 24 || ids[a[i].ID] {
			t.Fatalf("box %d: bad or duplicate id %q", i, a[i].ID)
		}
		ids[a[i].ID] = true
		if !a[i].Implanted {
			notImplanted++
		}
		if a[i].Lat < -27.7 || a[i].Lat > -27.48 || a[i].Lng < -48.66 || a[i].Lng > -48.44 {
			t.Fatalf("box %d: coords %v,%v not around Florianópolis", i, a[i].Lat, a[i].Lng)
		}
	}
	if notImplanted < 50 || notImplanted > 150 {
		t.Errorf("%d of 1000 not implanted, want about 10%%", notImplanted)
	}
	if a[0].Name[3:] != "-FLN-0001" {
		t.Errorf("name %q", a[0].Name)
	}
}

func TestConcurrentUse(t *testing.T) {
	s := NewServer(key, WithMaxPageSize(5))
	defer s.Close()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for _, b := range GenerateBoxes(20, int64(i), nil) {
				s.PutBox(b)
				s.DeleteBox(b.ID)
				s.PutBox(b)
			}
		})
		wg.Go(func() {
			for range 10 {
				req, _ := http.NewRequest(http.MethodGet, s.URL+"/api/v2/boxes?limit=1000", nil)
				req.Header.Set("Authorization", key)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				if resp.StatusCode != http.StatusOK {
					t.Errorf("status %d", resp.StatusCode)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				_ = s.Boxes()
			}
		})
	}
	wg.Wait()
	if n := len(s.Boxes()); n != 80 {
		t.Errorf("%d boxes, want 80", n)
	}
}
