package sytextest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testToken = "s3cr3t-token"
	testOrg   = 139
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newTestServer(t *testing.T, opts ...Option) *Server {
	t.Helper()
	s := NewServer(testToken, testOrg, opts...)
	t.Cleanup(s.Close)
	return s
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

// call sends a request; edit may change headers (auth is set by default).
func call(t *testing.T, ctx context.Context, method, rawURL, body string, edit func(h http.Header)) (reply, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, rawURL, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Token "+testToken)
	req.Header.Set("Organization", "139")
	req.Header.Set("Accept", "application/json")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if edit != nil {
		edit(req.Header)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}, err
}

func mustCall(t *testing.T, method, rawURL, body string, edit func(h http.Header)) reply {
	t.Helper()
	r, err := call(t, testCtx(t), method, rawURL, body, edit)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	return r
}

func TestAuthAndRouting(t *testing.T) {
	s := newTestServer(t)
	list := s.URL + "/api/networkelement/"
	tests := []struct {
		name   string
		url    string
		edit   func(h http.Header)
		status int
		detail string
	}{
		{"ok", list, nil, 200, ""},
		{"no token", list, func(h http.Header) { h.Del("Authorization") }, 401, "Authentication credentials were not provided."},
		{"wrong token", list, func(h http.Header) { h.Set("Authorization", "Token nope") }, 401, "Invalid token."},
		{"bearer", list, func(h http.Header) { h.Set("Authorization", "Bearer "+testToken) }, 401, "Authentication credentials were not provided."},
		{"no organization", list, func(h http.Header) { h.Del("Organization") }, 403, "You do not have permission to perform this action."},
		{"other organization", list, func(h http.Header) { h.Set("Organization", "140") }, 403, "You do not have permission to perform this action."},
		{"no trailing slash", s.URL + "/api/networkelement", nil, 404, ""},
		{"item without slash", s.URL + "/api/networkelement/1", nil, 404, ""},
		{"unknown path, no token", s.URL + "/api/other/", func(h http.Header) { h.Del("Authorization") }, 404, ""},
		{"unknown id", s.URL + "/api/networkelement/999/", nil, 404, "Not found."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustCall(t, http.MethodGet, tt.url, "", tt.edit)
			if r.status != tt.status {
				t.Fatalf("status = %d, want %d (body %s)", r.status, tt.status, r.body)
			}
			if tt.detail != "" {
				if got := r.json(t)["detail"]; got != tt.detail {
					t.Errorf("detail = %v, want %q", got, tt.detail)
				}
			}
		})
	}
	if got := s.Counts(); got.Total != int64(len(tests)) || got.Search != 6 || got.Get != 1 {
		t.Errorf("counts = %+v", got)
	}
}

func TestSearchIsCaseInsensitiveSubstringWithAbsoluteLinks(t *testing.T) {
	s := newTestServer(t)
	for _, n := range []string{"CTO-1", "CTO-10", "XCTO-1", "cto-1", "CEO-1", "CTO-2"} {
		s.Seed(Element{Name: n, Code: "C-" + n, NEType: 321})
	}
	s.Seed(Element{Name: "other", Code: "has cto-1 in code"})

	var names []string
	next := s.URL + "/api/networkelement/?q=CTO-1&limit=2&offset=0"
	pages := 0
	for next != "" {
		r := mustCall(t, http.MethodGet, next, "", nil)
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		var page struct {
			Count    int              `json:"count"`
			Next     *string          `json:"next"`
			Previous *string          `json:"previous"`
			Results  []map[string]any `json:"results"`
		}
		if err := json.Unmarshal(r.body, &page); err != nil {
			t.Fatal(err)
		}
		if page.Count != 5 {
			t.Errorf("count = %d, want 5", page.Count)
		}
		if pages == 0 && page.Previous != nil {
			t.Errorf("first page previous = %q, want null", *page.Previous)
		}
		if pages > 0 && page.Previous == nil {
			t.Errorf("page %d has no previous link", pages+1)
		}
		for _, e := range page.Results {
			names = append(names, e["name"].(string))
		}
		next = ""
		if page.Next != nil {
			next = *page.Next
			u, err := url.Parse(next)
			if err != nil || u.Scheme != "http" || "http://"+u.Host != s.URL || u.Query().Get("q") != "CTO-1" {
				t.Fatalf("next = %q, want an absolute link to %s keeping q", next, s.URL)
			}
		}
		pages++
	}
	want := "CTO-1,CTO-10,XCTO-1,cto-1,other"
	if got := strings.Join(names, ","); got != want || pages != 3 {
		t.Errorf("names = %s over %d pages, want %s over 3", got, pages, want)
	}
}

func TestListOrderingFiltersAndPageSizes(t *testing.T) {
	s := newTestServer(t, WithDefaultPageSize(2), WithMaxPageSize(3))
	for i := 0; i < 5; i++ {
		s.Seed(Element{Name: "E", Code: "c", NEType: int64(321 + i%2)})
	}
	ids := func(r reply) string {
		var p struct{ Results []struct{ ID int64 } }
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range p.Results {
			out = append(out, jsonInt(e.ID))
		}
		return strings.Join(out, ",")
	}
	base := s.URL + "/api/networkelement/"
	tests := []struct{ query, want string }{
		{"", "1,2"},
		{"?limit=100", "1,2,3"},
		{"?limit=0", "1,2"},
		{"?limit=abc", "1,2"},
		{"?ordering=-id&limit=3", "5,4,3"},
		{"?id__in=4,2&limit=3", "2,4"},
		{"?ne_type=322&limit=3", "2,4"},
		{"?offset=4", "5"},
		{"?offset=40", ""},
	}
	for _, tt := range tests {
		r := mustCall(t, http.MethodGet, base+tt.query, "", nil)
		if got := ids(r); r.status != 200 || got != tt.want {
			t.Errorf("%s: status %d ids %q, want %q", tt.query, r.status, got, tt.want)
		}
	}
	if r := mustCall(t, http.MethodGet, base+"?id__in=1,x", "", nil); r.status != 400 {
		t.Errorf("id__in=1,x: status %d, want 400", r.status)
	}
}

func jsonInt(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestCreateSerializesLikeDRF(t *testing.T) {
	s := newTestServer(t)
	r := mustCall(t, http.MethodPost, s.URL+"/api/networkelement/",
		`{"name":"  CTO 1  ","code":"C1","ne_type":321,"organization":1,"extra":true,
		  "networkelementcoordinates_set":[{"name":"Coordinates","latitude":-27.58660449,"longitude":"-48.5274"}]}`, nil)
	if r.status != http.StatusCreated {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	got := r.json(t)
	if got["name"] != "CTO 1" {
		t.Errorf("name = %q, want trimmed (DRF trim_whitespace)", got["name"])
	}
	if nt, _ := got["ne_type"].(map[string]any); nt["id"] != float64(321) {
		t.Errorf("ne_type = %v, want object with id 321", got["ne_type"])
	}
	cs, _ := got["networkelementcoordinates_set"].([]any)
	if len(cs) != 1 {
		t.Fatalf("coords = %v", got["networkelementcoordinates_set"])
	}
	c := cs[0].(map[string]any)
	if c["latitude"] != "-27.586604" || c["longitude"] != "-48.527400" || c["name"] != "Coordinates" {
		t.Errorf("coords entry = %v, want 6-place decimal strings", c)
	}
	if got["organization"] != float64(testOrg) {
		t.Errorf("organization = %v", got["organization"])
	}
	st := s.Elements()
	if len(st) != 1 || st[0].Latitude != -27.586604 || !st[0].HasCoords || st[0].NEType != 321 {
		t.Errorf("stored = %+v", st)
	}
}

func TestCreateValidation(t *testing.T) {
	s := newTestServer(t)
	ok := `"name":"n","code":"c","ne_type":321`
	tests := []struct {
		name, body string
		status     int
		field, msg string
	}{
		{"missing name", `{"code":"c","ne_type":321}`, 400, "name", "This field is required."},
		{"missing code", `{"name":"n","ne_type":321}`, 400, "code", "This field is required."},
		{"blank name", `{"name":"  ","code":"c","ne_type":321}`, 400, "name", "This field may not be blank."},
		{"null name", `{"name":null,"code":"c","ne_type":321}`, 400, "name", "This field may not be null."},
		{"NUL in name", `{"name":"a\u0000b","code":"c","ne_type":321}`, 400, "name", "Null characters are not allowed."},
		{"unknown ne_type", `{"name":"n","code":"c","ne_type":999}`, 400, "ne_type", `Invalid pk "999" - object does not exist.`},
		{"ne_type as object", `{"name":"n","code":"c","ne_type":{"id":321}}`, 400, "ne_type", "Incorrect type. Expected pk value, received dict."},
		{"missing ne_type", `{"name":"n","code":"c"}`, 400, "ne_type", "This field is required."},
		{"latitude out of range", `{` + ok + `,"networkelementcoordinates_set":[{"name":"Coordinates","latitude":91,"longitude":0}]}`, 400, "networkelementcoordinates_set", ""},
		{"longitude not a number", `{` + ok + `,"networkelementcoordinates_set":[{"latitude":1,"longitude":"east"}]}`, 400, "networkelementcoordinates_set", ""},
		{"coords not a list", `{` + ok + `,"networkelementcoordinates_set":{"latitude":1}}`, 400, "networkelementcoordinates_set", ""},
		{"not an object", `[1,2]`, 400, "non_field_errors", "Invalid data. Expected a dictionary, but got list."},
		{"ne_type as numeric string", `{"name":"n","code":"c","ne_type":"322"}`, 201, "", ""},
		{"duplicate name allowed", `{"name":"n","code":"c","ne_type":321}`, 201, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustCall(t, http.MethodPost, s.URL+"/api/networkelement/", tt.body, nil)
			if r.status != tt.status {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.status, r.body)
			}
			if tt.field == "" {
				return
			}
			v, present := r.json(t)[tt.field]
			if !present {
				t.Fatalf("no %q in %s", tt.field, r.body)
			}
			if tt.msg != "" {
				if l, _ := v.([]any); len(l) != 1 || l[0] != tt.msg {
					t.Errorf("%s = %v, want [%q]", tt.field, v, tt.msg)
				}
			}
		})
	}
	if n := len(s.ElementsByName("n")); n != 2 {
		t.Errorf("%d elements named n, want 2 (duplicates are allowed)", n)
	}
}

func TestMalformedAndWrongMediaType(t *testing.T) {
	s := newTestServer(t)
	r := mustCall(t, http.MethodPost, s.URL+"/api/networkelement/", `{"name":`, nil)
	if d, _ := r.json(t)["detail"].(string); r.status != 400 || !strings.HasPrefix(d, "JSON parse error - ") {
		t.Errorf("malformed: %d %s", r.status, r.body)
	}
	r = mustCall(t, http.MethodPost, s.URL+"/api/networkelement/", `{}`, func(h http.Header) { h.Set("Content-Type", "text/plain") })
	if r.status != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain: %d %s", r.status, r.body)
	}
	r = mustCall(t, http.MethodPut, s.URL+"/api/networkelement/", `{}`, nil)
	if r.status != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d %s", r.status, r.body)
	}
	if len(s.Elements()) != 0 {
		t.Errorf("elements created: %+v", s.Elements())
	}
}

func TestPatchChangesOnlyGivenFields(t *testing.T) {
	s := newTestServer(t)
	e := s.Seed(Element{Name: "CTO", Code: "C", NEType: 321, Latitude: 1, Longitude: 2, HasCoords: true})
	item := s.URL + "/api/networkelement/" + jsonInt(e.ID) + "/"

	r := mustCall(t, http.MethodPatch, item, `{"ne_type":322}`, nil)
	if r.status != 200 {
		t.Fatalf("patch ne_type: %d %s", r.status, r.body)
	}
	got, _ := s.Element(e.ID)
	if got.NEType != 322 || got.Name != "CTO" || got.Latitude != 1 || !got.HasCoords {
		t.Errorf("after ne_type patch: %+v", got)
	}
	r = mustCall(t, http.MethodPatch, item, `{"networkelementcoordinates_set":[{"name":"Coordinates","latitude":"-10.1234567","longitude":20}]}`, nil)
	if r.status != 200 {
		t.Fatalf("patch coords: %d %s", r.status, r.body)
	}
	got, _ = s.Element(e.ID)
	if got.NEType != 322 || got.Latitude != -10.123457 || got.Longitude != 20 {
		t.Errorf("after coords patch: %+v", got)
	}
	if r := mustCall(t, http.MethodPatch, item, `{"ne_type":999}`, nil); r.status != 400 {
		t.Errorf("invalid patch: %d", r.status)
	}
	if r := mustCall(t, http.MethodPatch, s.URL+"/api/networkelement/77/", `{"ne_type":321}`, nil); r.status != 404 || r.json(t)["detail"] != "Not found." {
		t.Errorf("unknown id: %d %s", r.status, r.body)
	}
	if r := mustCall(t, http.MethodGet, item, "", nil); r.status != 200 || r.json(t)["ne_type"].(map[string]any)["id"] != float64(322) {
		t.Errorf("get: %d %s", r.status, r.body)
	}
	if c := s.Counts(); c.Update != 4 || c.Get != 1 {
		t.Errorf("counts = %+v", c)
	}
}

func TestFaults(t *testing.T) {
	s := newTestServer(t)
	list := s.URL + "/api/networkelement/"

	s.FailNext(503, 2)
	for i := 0; i < 2; i++ {
		r := mustCall(t, http.MethodGet, list, "", nil)
		if r.status != 503 || r.header.Get("Retry-After") != "1" {
			t.Fatalf("fault %d: %d retry-after %q", i, r.status, r.header.Get("Retry-After"))
		}
	}
	if r := mustCall(t, http.MethodGet, list, "", nil); r.status != 200 {
		t.Fatalf("after faults: %d", r.status)
	}

	s.FailNext(429, 1)
	if r := mustCall(t, http.MethodGet, list, "", nil); r.status != 429 || r.header.Get("Retry-After") != "1" {
		t.Errorf("429: %d", r.status)
	}

	s.SetOutage(true)
	if r := mustCall(t, http.MethodGet, list, "", nil); r.status != 503 {
		t.Errorf("outage: %d", r.status)
	}
	s.SetOutage(false)

	s.FailMatching(func(r *http.Request) (int, string, bool) {
		b, _ := io.ReadAll(r.Body)
		if r.Method == http.MethodPost && strings.Contains(string(b), `"bad"`) {
			return 400, `{"non_field_errors":["nope"]}`, true
		}
		return 0, "", false
	})
	if r := mustCall(t, http.MethodPost, list, `{"name":"bad","code":"c","ne_type":321}`, nil); r.status != 400 {
		t.Errorf("matching rule: %d", r.status)
	}
	if r := mustCall(t, http.MethodPost, list, `{"name":"good","code":"c","ne_type":321}`, nil); r.status != 201 {
		t.Errorf("not matching rule: %d %s (body must still reach the handler)", r.status, r.body)
	}
	s.FailMatching(nil)
	if r := mustCall(t, http.MethodPost, list, `{"name":"bad","code":"c","ne_type":321}`, nil); r.status != 201 {
		t.Errorf("rule cleared: %d", r.status)
	}
}

func TestHangReleasesOnClientTimeoutAndOnResume(t *testing.T) {
	s := newTestServer(t)
	list := s.URL + "/api/networkelement/"
	s.SetHang(true)

	ctx, cancel := context.WithTimeout(testCtx(t), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := call(t, ctx, http.MethodGet, list, "", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("hang held the client for %v", d)
	}

	done := make(chan reply, 1)
	go func() {
		r, _ := call(t, testCtx(t), http.MethodGet, list, "", nil)
		done <- r
	}()
	time.Sleep(50 * time.Millisecond)
	s.SetHang(false)
	select {
	case r := <-done:
		if r.status != 200 {
			t.Errorf("after resume: %d", r.status)
		}
	case <-testCtx(t).Done():
		t.Fatal("request not released by SetHang(false)")
	}
}

func TestLatency(t *testing.T) {
	s := newTestServer(t, WithLatency(50*time.Millisecond))
	start := time.Now()
	mustCall(t, http.MethodGet, s.URL+"/api/networkelement/", "", nil)
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("answered after %v, want >= 50ms", d)
	}
	s.SetLatency(0)
}

func TestConcurrentCreatesKeepDuplicates(t *testing.T) {
	s := newTestServer(t)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := call(t, testCtx(t), http.MethodPost, s.URL+"/api/networkelement/", `{"name":"same","code":"c","ne_type":321}`, nil)
			if err != nil || r.status != 201 {
				t.Errorf("create: %v %d", err, r.status)
			}
		}()
	}
	wg.Wait()
	es := s.ElementsByName("same")
	if len(es) != 20 {
		t.Fatalf("%d elements, want 20", len(es))
	}
	for i := 1; i < len(es); i++ {
		if es[i].ID <= es[i-1].ID {
			t.Fatalf("ids not unique and sorted: %+v", es)
		}
	}
	if c := s.Counts(); c.Create != 20 {
		t.Errorf("counts = %+v", c)
	}
	s.ResetCounts()
	if c := s.Counts(); c != (Counts{}) {
		t.Errorf("after reset: %+v", c)
	}
}

func TestSeedKeepsGivenIDAndAdvances(t *testing.T) {
	s := newTestServer(t)
	if e := s.Seed(Element{ID: 10, Name: "a"}); e.ID != 10 {
		t.Fatalf("seeded id %d", e.ID)
	}
	if e := s.Seed(Element{Name: "b", Latitude: 1.23456789, HasCoords: true}); e.ID != 11 || e.Latitude != 1.234568 {
		t.Fatalf("next seed = %+v", e)
	}
}
