package sytex_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/sytex"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/sytex/sytextest"
)

const (
	token = "tok-9f8e7d6c5b4a"
	org   = 139
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newSim(t *testing.T, opts ...sytextest.Option) *sytextest.Server {
	t.Helper()
	s := sytextest.NewServer(token, org, opts...)
	t.Cleanup(s.Close)
	return s
}

func newClient(t *testing.T, baseURL string, edit ...func(*sytex.Options)) *sytex.Client {
	t.Helper()
	o := sytex.Options{BaseURL: baseURL, Token: token, OrganizationID: org}
	for _, e := range edit {
		e(&o)
	}
	c, err := sytex.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fixed serves the same answer to every request.
func fixed(t *testing.T, status int, contentType, body string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func names(es []sytex.Element) string {
	var out []string
	for _, e := range es {
		out = append(out, fmt.Sprintf("%d:%s", e.ID, e.Name))
	}
	return strings.Join(out, ",")
}

func TestFindByNameKeepsOnlyExactMatchesAcrossPages(t *testing.T) {
	sim := newSim(t)
	for _, n := range []string{"CTO-1", "CTO-10", "XCTO-1", "cto-1", "CTO-1 ", "CTO-1", "CTO-11", "CTO-1x", "CTO-1"} {
		sim.Seed(sytextest.Element{Name: n, Code: "C", NEType: 321})
	}
	c := newClient(t, sim.URL, func(o *sytex.Options) { o.PageSize = 2 })

	got, err := c.FindByName(testCtx(t), "CTO-1")
	if err != nil {
		t.Fatal(err)
	}
	if want := "1:CTO-1,6:CTO-1,9:CTO-1"; names(got) != want {
		t.Errorf("got %s, want %s", names(got), want)
	}
	if n := sim.Counts().Search; n != 5 {
		t.Errorf("%d searches, want 5 pages of 2 for 9 substring hits", n)
	}

	got, err = c.FindByName(testCtx(t), "absent")
	if err != nil || len(got) != 0 {
		t.Errorf("absent: %v %v", got, err)
	}
}

func TestFindByNameHostileNames(t *testing.T) {
	sim := newSim(t)
	c := newClient(t, sim.URL, func(o *sytex.Options) { o.PageSize = 3 })
	hostile := []string{
		"CTO 1 & 2 #3",
		"a/b/../c?x=1&q=2",
		"São João — caixa 7",
		"caixa 🚀 emoji",
		"100% + plus",
		`quote " and \ backslash`,
		"<script>alert(1)</script>",
		strings.Repeat("long-name-", 30),
	}
	for _, n := range hostile {
		// A near-miss next to each name makes exact filtering matter.
		sim.Seed(sytextest.Element{Name: n + "x", Code: "near", NEType: 321})
		if _, err := c.Create(testCtx(t), sytex.CreateRequest{Name: n, Code: "c", NETypeID: 321, Latitude: -27.5, Longitude: -48.5}); err != nil {
			t.Fatalf("create %q: %v", n, err)
		}
	}
	for _, n := range hostile {
		got, err := c.FindByName(testCtx(t), n)
		if err != nil {
			t.Fatalf("find %q: %v", n, err)
		}
		if len(got) != 1 || got[0].Name != n {
			t.Errorf("find %q = %s", n, names(got))
		}
		if stored := sim.ElementsByName(n); len(stored) != 1 {
			t.Errorf("stored under %q: %+v", n, stored)
		}
	}
}

func TestCreateUpdateRoundTrip(t *testing.T) {
	sim := newSim(t)
	c := newClient(t, sim.URL)
	ctx := testCtx(t)

	e, err := c.Create(ctx, sytex.CreateRequest{Name: "CTO-7", Code: "OZ-7", NETypeID: 321, Latitude: -27.58660449, Longitude: -48.5274})
	if err != nil {
		t.Fatal(err)
	}
	loc, ok := e.Location()
	if e.ID == 0 || e.Name != "CTO-7" || e.Code != "OZ-7" || e.NETypeID != 321 || !ok ||
		!loc.Equal(sytex.Coordinates{Latitude: -27.586604, Longitude: -48.5274}) {
		t.Fatalf("created = %+v", e)
	}

	nt := int64(322)
	e2, err := c.Update(ctx, e.ID, sytex.Patch{NETypeID: &nt})
	if err != nil || e2.NETypeID != 322 {
		t.Fatalf("update ne_type: %+v %v", e2, err)
	}
	if loc2, _ := e2.Location(); !loc2.Equal(loc) {
		t.Errorf("ne_type patch moved the point: %+v", e2)
	}
	e3, err := c.Update(ctx, e.ID, sytex.Patch{Coordinates: &sytex.Coordinates{Latitude: 10.5, Longitude: -20.25}})
	if err != nil {
		t.Fatal(err)
	}
	if loc3, _ := e3.Location(); e3.NETypeID != 322 || !loc3.Equal(sytex.Coordinates{Latitude: 10.5, Longitude: -20.25}) {
		t.Errorf("after coords patch: %+v", e3)
	}

	st := sim.Elements()
	if len(st) != 1 || st[0].NEType != 322 || st[0].Latitude != 10.5 || st[0].Longitude != -20.25 {
		t.Errorf("simulator holds %+v", st)
	}
	if got, err := c.FindByName(ctx, "CTO-7"); err != nil || len(got) != 1 || got[0].ID != e.ID {
		t.Errorf("find after update: %v %v", got, err)
	}
}

func TestUpdateEmptyPatchSendsNothing(t *testing.T) {
	sim := newSim(t)
	c := newClient(t, sim.URL)
	e, err := c.Update(testCtx(t), 42, sytex.Patch{})
	if err != nil || e.ID != 0 {
		t.Fatalf("empty patch: %+v %v", e, err)
	}
	if n := sim.Counts().Total; n != 0 {
		t.Errorf("%d requests, want 0", n)
	}
}

func TestErrorClassification(t *testing.T) {
	nt := int64(321)
	tests := []struct {
		name      string
		setup     func(*sytextest.Server)
		edit      func(*sytex.Options)
		op        func(context.Context, *sytex.Client) error
		status    int // 0: not an APIError
		permanent bool
		auth      bool
		inText    string
	}{
		{
			name: "400 unknown ne_type",
			op: func(ctx context.Context, c *sytex.Client) error {
				_, err := c.Create(ctx, sytex.CreateRequest{Name: "n", Code: "c", NETypeID: 999})
				return err
			},
			status: 400, permanent: true, inText: `Invalid pk \"999\" - object does not exist.`,
		},
		{
			name: "404 unknown id",
			op: func(ctx context.Context, c *sytex.Client) error {
				_, err := c.Update(ctx, 5000, sytex.Patch{NETypeID: &nt})
				return err
			},
			status: 404, permanent: true, inText: "404 Not Found",
		},
		{name: "503", setup: func(s *sytextest.Server) { s.FailNext(503, 1) }, status: 503, inText: "503 Service Unavailable"},
		{name: "500", setup: func(s *sytextest.Server) { s.FailNext(500, 1) }, status: 500},
		{name: "429", setup: func(s *sytextest.Server) { s.FailNext(429, 1) }, status: 429},
		{name: "408", setup: func(s *sytextest.Server) { s.FailNext(408, 1) }, status: 408},
		{name: "outage", setup: func(s *sytextest.Server) { s.SetOutage(true) }, status: 503},
		{name: "401 wrong token", edit: func(o *sytex.Options) { o.Token = "wrong-token-123" }, status: 401, permanent: true, auth: true},
		{name: "403 wrong organization", edit: func(o *sytex.Options) { o.OrganizationID = 7 }, status: 403, permanent: true, auth: true},
		{
			name:  "hang with short client timeout",
			setup: func(s *sytextest.Server) { s.SetHang(true) },
			edit:  func(o *sytex.Options) { o.HTTPClient = &http.Client{Timeout: 100 * time.Millisecond} },
		},
		{
			name:  "slow answer past the context deadline",
			setup: func(s *sytextest.Server) { s.SetLatency(5 * time.Second) },
			op: func(ctx context.Context, c *sytex.Client) error {
				ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
				defer cancel()
				_, err := c.FindByName(ctx, "x")
				if !errors.Is(err, context.DeadlineExceeded) {
					return fmt.Errorf("want deadline exceeded, got %w", err)
				}
				return err
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := newSim(t)
			if tt.setup != nil {
				tt.setup(sim)
			}
			c := newClient(t, sim.URL, func(o *sytex.Options) {
				if tt.edit != nil {
					tt.edit(o)
				}
			})
			op := tt.op
			if op == nil {
				op = func(ctx context.Context, c *sytex.Client) error { _, err := c.FindByName(ctx, "CTO"); return err }
			}
			start := time.Now()
			err := op(testCtx(t), c)
			if err == nil {
				t.Fatal("no error")
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %v", d)
			}
			var ae *sytex.APIError
			switch {
			case tt.status == 0 && errors.As(err, &ae):
				t.Errorf("unexpected APIError %v", err)
			case tt.status != 0 && (!errors.As(err, &ae) || ae.Status != tt.status):
				t.Errorf("err = %v, want APIError %d", err, tt.status)
			}
			if got := sytex.IsPermanent(err); got != tt.permanent {
				t.Errorf("IsPermanent = %v, want %v (%v)", got, tt.permanent, err)
			}
			if got := sytex.IsAuth(err); got != tt.auth {
				t.Errorf("IsAuth = %v, want %v", got, tt.auth)
			}
			msg := err.Error()
			if strings.Contains(msg, token) || strings.Contains(msg, "wrong-token-123") {
				t.Errorf("token leaked: %s", msg)
			}
			if !strings.Contains(msg, tt.inText) {
				t.Errorf("error %q does not contain %q", msg, tt.inText)
			}
			if tt.status == 429 || tt.status == 503 {
				if ae.RetryAfter != time.Second {
					t.Errorf("RetryAfter = %v, want 1s", ae.RetryAfter)
				}
			}
		})
	}
}

func TestAPIErrorFormatAndTruncation(t *testing.T) {
	long := `{"ne_type": ["Invalid pk..."], "pad": "` + strings.Repeat("é", 600) + "\n\x1b[31m" + `"}`
	srv := fixed(t, 400, "application/json", long)
	c := newClient(t, srv.URL)
	_, err := c.Create(testCtx(t), sytex.CreateRequest{Name: "n", Code: "c", NETypeID: 1})
	var ae *sytex.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v", err)
	}
	if !strings.HasPrefix(err.Error(), `sytex: POST /api/networkelement/: 400 Bad Request: {"ne_type": ["Invalid pk..."]`) {
		t.Errorf("message = %q", err.Error())
	}
	if len(ae.Body) > 512 || !strings.HasSuffix(ae.Body, "...") || strings.ContainsAny(ae.Body, "\n\x1b") {
		t.Errorf("body not truncated/sanitized: %d bytes %q", len(ae.Body), ae.Body)
	}
}

func TestTokenNeverInErrors(t *testing.T) {
	// A hostile or misconfigured server echoing the request headers.
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := 200
		if r.Method == http.MethodPost {
			status = 400
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, "<html>auth was %s</html>", r.Header.Get("Authorization"))
	}))
	t.Cleanup(echo.Close)
	c := newClient(t, echo.URL)
	_, err1 := c.FindByName(testCtx(t), "x")
	_, err2 := c.Create(testCtx(t), sytex.CreateRequest{Name: "n", Code: "c", NETypeID: 1})
	for _, err := range []error{err1, err2} {
		if err == nil || strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), "[REDACTED]") {
			t.Errorf("err = %v", err)
		}
	}
	if s := fmt.Sprintf("%v %+v %#v", c, sytex.Options{Token: token}, sytex.Options{Token: token}); strings.Contains(s, token) {
		t.Errorf("fmt leaks token: %s", s)
	}
}

func TestUnusable2xxIsResponseError(t *testing.T) {
	tests := []struct {
		name, body string
		create     bool
	}{
		{"HTML 200", "<!doctype html><html><body>Maintenance</body></html>", false},
		{"truncated JSON", `{"count": 1, "next": null, "results": [{"id": 1, "name": "CT`, false},
		{"non-numeric id", `{"count":1,"next":null,"results":[{"id":"abc","name":"x"}]}`, false},
		{"name not a string", `{"count":1,"next":null,"results":[{"id":1,"name":42}]}`, false},
		{"missing name", `{"count":1,"next":null,"results":[{"id":1}]}`, false},
		{"results not a list", `{"count":1,"next":null,"results":{"id":1}}`, false},
		{"next not a string", `{"count":1,"next":5,"results":[]}`, false},
		{"bad latitude", `{"count":1,"next":null,"results":[{"id":1,"name":"x","networkelementcoordinates_set":[{"latitude":"north","longitude":1}]}]}`, false},
		{"create answers HTML", "<html>ok</html>", true},
		{"create answers a list", `[{"id":1,"name":"n"}]`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status := 200
			if tt.create {
				status = 201
			}
			srv := fixed(t, status, "text/html", tt.body)
			c := newClient(t, srv.URL)
			var err error
			if tt.create {
				_, err = c.Create(testCtx(t), sytex.CreateRequest{Name: "n", Code: "c", NETypeID: 1})
			} else {
				_, err = c.FindByName(testCtx(t), "x")
			}
			var re *sytex.ResponseError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v, want *ResponseError", err)
			}
			if sytex.IsPermanent(err) || sytex.IsAuth(err) {
				t.Errorf("classified permanent/auth: %v", err)
			}
			if re.Reason == "" || !strings.Contains(err.Error(), "unusable response") {
				t.Errorf("message = %q", err.Error())
			}
		})
	}
}

func TestTolerantDecoding(t *testing.T) {
	tests := []struct {
		name     string
		element  string
		neType   int64
		coords   []sytex.NamedCoordinates
		wantCode string
	}{
		{"ne_type object, string decimals", `{"id":1,"name":"x","code":"C","ne_type":{"id":321,"name":"CTO"},"networkelementcoordinates_set":[{"id":7,"name":"Coordinates","latitude":"-27.586604","longitude":"-48.527400"}]}`,
			321, []sytex.NamedCoordinates{{ID: 7, Name: "Coordinates", Latitude: -27.586604, Longitude: -48.5274}}, "C"},
		{"ne_type id, number decimals", `{"id":1,"name":"x","ne_type":322,"networkelementcoordinates_set":[{"name":"Coordinates","latitude":-1.5,"longitude":2}]}`,
			322, []sytex.NamedCoordinates{{Name: "Coordinates", Latitude: -1.5, Longitude: 2}}, ""},
		{"ne_type null, coords missing", `{"id":1,"name":"x","ne_type":null}`, 0, nil, ""},
		{"coords null, id string", `{"id":"1","name":"x","networkelementcoordinates_set":null,"unknown":{"a":[1]}}`, 0, nil, ""},
		{"ne_type numeric string, null point skipped", `{"id":1,"name":"x","ne_type":"323","networkelementcoordinates_set":[{"latitude":null,"longitude":null}]}`, 323, nil, ""},
		{"numeric code", `{"id":1,"name":"x","code":1234}`, 0, nil, "1234"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := fixed(t, 200, "application/json", `{"count":1,"next":null,"previous":null,"results":[`+tt.element+`]}`)
			got, err := newClient(t, srv.URL).FindByName(testCtx(t), "x")
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 {
				t.Fatalf("got %+v", got)
			}
			e := got[0]
			if e.ID != 1 || e.NETypeID != tt.neType || e.Code != tt.wantCode || fmt.Sprint(e.Coordinates) != fmt.Sprint(tt.coords) {
				t.Errorf("got %+v", e)
			}
		})
	}
	t.Run("bare list", func(t *testing.T) {
		srv := fixed(t, 200, "application/json", `[{"id":2,"name":"x"},{"id":1,"name":"x"},{"id":3,"name":"x "}]`)
		got, err := newClient(t, srv.URL).FindByName(testCtx(t), "x")
		if err != nil || names(got) != "1:x,2:x" {
			t.Errorf("got %s %v", names(got), err)
		}
	})
}

// recorder answers like a one-page Sytex and records what it received.
type recorder struct {
	mu   sync.Mutex
	reqs []*http.Request
	body []string
}

func (rc *recorder) serve(t *testing.T, answer func(r *http.Request) (int, string)) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, r)
		rc.body = append(rc.body, string(b))
		rc.mu.Unlock()
		status, body := answer(r)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestWireFormat(t *testing.T) {
	var rc recorder
	srv := rc.serve(t, func(r *http.Request) (int, string) {
		switch r.Method {
		case http.MethodPost:
			return 201, `{"id":5,"name":"n"}`
		case http.MethodPatch:
			return 200, `{"id":5,"name":"n"}`
		}
		return 200, `{"count":0,"next":null,"previous":null,"results":[]}`
	})
	var mu sync.Mutex
	var observed []string
	c := newClient(t, srv.URL+"/", func(o *sytex.Options) {
		o.PageSize = 7
		o.OnRequest = func(method, route string, status int, d time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			observed = append(observed, fmt.Sprintf("%s %s %d", method, route, status))
		}
	})
	ctx := testCtx(t)
	if _, err := c.FindByName(ctx, "a b&c#d/é🚀"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, sytex.CreateRequest{Name: "n", Code: "c", NETypeID: 321, Latitude: -27.58660449999, Longitude: 180}); err != nil {
		t.Fatal(err)
	}
	nt := int64(322)
	if _, err := c.Update(ctx, 5, sytex.Patch{NETypeID: &nt}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Update(ctx, 5, sytex.Patch{Coordinates: &sytex.Coordinates{Latitude: 1, Longitude: -0.0000001}}); err != nil {
		t.Fatal(err)
	}

	if len(rc.reqs) != 4 {
		t.Fatalf("%d requests", len(rc.reqs))
	}
	search := rc.reqs[0]
	if search.URL.Path != "/api/networkelement/" || search.URL.Query().Get("q") != "a b&c#d/é🚀" ||
		search.URL.Query().Get("limit") != "7" || search.URL.Query().Get("offset") != "0" {
		t.Errorf("search URL = %s", search.URL)
	}
	wantBodies := []string{
		"",
		`{"name":"n","code":"c","ne_type":321,"networkelementcoordinates_set":[{"name":"Coordinates","latitude":-27.586604,"longitude":180}]}`,
		`{"ne_type":322}`,
		`{"networkelementcoordinates_set":[{"name":"Coordinates","latitude":1,"longitude":0}]}`,
	}
	wantPaths := []string{"/api/networkelement/", "/api/networkelement/", "/api/networkelement/5/", "/api/networkelement/5/"}
	for i, r := range rc.reqs {
		if rc.body[i] != wantBodies[i] {
			t.Errorf("request %d body = %s, want %s", i, rc.body[i], wantBodies[i])
		}
		if r.URL.Path != wantPaths[i] {
			t.Errorf("request %d path = %s", i, r.URL.Path)
		}
		h := r.Header
		if h.Get("Authorization") != "Token "+token || h.Get("Organization") != "139" ||
			h.Get("Accept") != "application/json" || h.Get("User-Agent") != "ozmap-sytex-sync" {
			t.Errorf("request %d headers = %v", i, h)
		}
		if ct := h.Get("Content-Type"); (i > 0) != (ct == "application/json") {
			t.Errorf("request %d Content-Type = %q", i, ct)
		}
	}
	want := "GET /api/networkelement/ 200,POST /api/networkelement/ 201,PATCH /api/networkelement/{id}/ 200,PATCH /api/networkelement/{id}/ 200"
	if got := strings.Join(observed, ","); got != want {
		t.Errorf("OnRequest saw %s", got)
	}
}

func TestOnRequestReportsTransportErrorsAsZero(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close() // nothing listens there any more
	var status = -1
	c := newClient(t, srv.URL, func(o *sytex.Options) {
		o.OnRequest = func(_, _ string, s int, _ time.Duration) { status = s }
	})
	_, err := c.FindByName(testCtx(t), "x")
	if err == nil || sytex.IsPermanent(err) || status != 0 {
		t.Errorf("err = %v, status = %d", err, status)
	}
}

func TestRefusesInputThatCannotRoundTrip(t *testing.T) {
	sim := newSim(t)
	c := newClient(t, sim.URL)
	ctx := testCtx(t)
	tests := []struct {
		name string
		op   func() error
	}{
		{"empty name search", func() error { _, err := c.FindByName(ctx, ""); return err }},
		{"invalid UTF-8 search", func() error { _, err := c.FindByName(ctx, "a\xffb"); return err }},
		{"trailing space create", func() error {
			_, err := c.Create(ctx, sytex.CreateRequest{Name: "CTO ", Code: "c", NETypeID: 321})
			return err
		}},
		{"NUL in name", func() error {
			_, err := c.Create(ctx, sytex.CreateRequest{Name: "a\x00", Code: "c", NETypeID: 321})
			return err
		}},
		{"empty code", func() error { _, err := c.Create(ctx, sytex.CreateRequest{Name: "a", NETypeID: 321}); return err }},
		{"no type", func() error { _, err := c.Create(ctx, sytex.CreateRequest{Name: "a", Code: "c"}); return err }},
		{"NaN latitude", func() error {
			_, err := c.Create(ctx, sytex.CreateRequest{Name: "a", Code: "c", NETypeID: 321, Latitude: nan()})
			return err
		}},
		{"latitude out of range", func() error {
			p := sytex.Patch{Coordinates: &sytex.Coordinates{Latitude: 91}}
			_, err := c.Update(ctx, 1, p)
			return err
		}},
		{"zero id", func() error {
			nt := int64(321)
			_, err := c.Update(ctx, 0, sytex.Patch{NETypeID: &nt})
			return err
		}},
	}
	for _, tt := range tests {
		err := tt.op()
		if !errors.Is(err, sytex.ErrInvalidInput) || !sytex.IsPermanent(err) {
			t.Errorf("%s: err = %v, want ErrInvalidInput", tt.name, err)
		}
	}
	if n := sim.Counts().Total; n != 0 {
		t.Errorf("%d requests sent for refused input", n)
	}
}

func nan() float64 { var z float64; return z / z }

func TestBodyCap(t *testing.T) {
	sim := newSim(t)
	for i := 0; i < 30; i++ {
		sim.Seed(sytextest.Element{Name: "big", Code: strings.Repeat("c", 100), NEType: 321})
	}
	c := newClient(t, sim.URL, func(o *sytex.Options) { o.MaxBodyBytes = 1024; o.PageSize = 30 })
	_, err := c.FindByName(testCtx(t), "big")
	var re *sytex.ResponseError
	if !errors.As(err, &re) || !strings.Contains(re.Reason, "exceeds 1024 bytes") || sytex.IsPermanent(err) {
		t.Errorf("err = %v", err)
	}
	c = newClient(t, sim.URL, func(o *sytex.Options) { o.PageSize = 30 })
	if got, err := c.FindByName(testCtx(t), "big"); err != nil || len(got) != 30 {
		t.Errorf("default cap: %d %v", len(got), err)
	}
}

func TestNextLinkMustStayOnBaseURL(t *testing.T) {
	var followed bool
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { followed = true }))
	t.Cleanup(evil.Close)
	srv := fixed(t, 200, "application/json", `{"count":9,"next":"`+evil.URL+`/api/networkelement/?offset=2","results":[]}`)
	_, err := newClient(t, srv.URL).FindByName(testCtx(t), "x")
	var re *sytex.ResponseError
	if !errors.As(err, &re) || !strings.Contains(re.Reason, "leaves BaseURL") || followed {
		t.Errorf("err = %v, followed = %v", err, followed)
	}
}

func TestPaginationGuards(t *testing.T) {
	t.Run("loop", func(t *testing.T) {
		var srv *httptest.Server
		srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `{"count":9,"next":%q,"results":[]}`, "http://"+r.Host+"/api/networkelement/?q=x&limit=50&offset=0")
		}))
		t.Cleanup(srv.Close)
		_, err := newClient(t, srv.URL).FindByName(testCtx(t), "x")
		var re *sytex.ResponseError
		if !errors.As(err, &re) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("endless", func(t *testing.T) {
		var n int
		var mu sync.Mutex
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			n++
			page := n
			mu.Unlock()
			fmt.Fprintf(w, `{"count":1e9,"next":"http://%s/api/networkelement/?offset=%d","results":[{"id":%d,"name":"x"}]}`, r.Host, page, page)
		}))
		t.Cleanup(srv.Close)
		_, err := newClient(t, srv.URL).FindByName(testCtx(t), "x")
		var re *sytex.ResponseError
		if !errors.As(err, &re) || !strings.Contains(re.Reason, "200 pages") || n != sytex.MaxPages {
			t.Errorf("err = %v after %d pages", err, n)
		}
	})
}

func TestRedirectIsNotFollowed(t *testing.T) {
	var rc recorder
	srv := rc.serve(t, func(r *http.Request) (int, string) { return 0, "" })
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, srv.URL+r.URL.Path, http.StatusMovedPermanently)
	}))
	t.Cleanup(redirect.Close)
	_, err := newClient(t, redirect.URL).Create(testCtx(t), sytex.CreateRequest{Name: "n", Code: "c", NETypeID: 1})
	var ae *sytex.APIError
	if !errors.As(err, &ae) || ae.Status != 301 || sytex.IsPermanent(err) || len(rc.reqs) != 0 {
		t.Errorf("err = %v, requests at target = %d", err, len(rc.reqs))
	}
}

func TestNewValidatesOptions(t *testing.T) {
	ok := sytex.Options{BaseURL: "https://app.sytex.io", Token: token, OrganizationID: 139}
	tests := []struct {
		name string
		edit func(*sytex.Options)
	}{
		{"empty base", func(o *sytex.Options) { o.BaseURL = "" }},
		{"ftp base", func(o *sytex.Options) { o.BaseURL = "ftp://app.sytex.io" }},
		{"no host", func(o *sytex.Options) { o.BaseURL = "https://" }},
		{"credentials", func(o *sytex.Options) { o.BaseURL = "https://u:p@app.sytex.io" }},
		{"query", func(o *sytex.Options) { o.BaseURL = "https://app.sytex.io/?x=1" }},
		{"empty token", func(o *sytex.Options) { o.Token = "" }},
		{"token with newline", func(o *sytex.Options) { o.Token = token + "\r\nX-Evil: 1" }},
		{"zero org", func(o *sytex.Options) { o.OrganizationID = 0 }},
		{"negative page", func(o *sytex.Options) { o.PageSize = -1 }},
		{"negative cap", func(o *sytex.Options) { o.MaxBodyBytes = -1 }},
	}
	if _, err := sytex.New(ok); err != nil {
		t.Fatalf("valid options: %v", err)
	}
	for _, tt := range tests {
		o := ok
		tt.edit(&o)
		_, err := sytex.New(o)
		if err == nil {
			t.Errorf("%s: accepted", tt.name)
		} else if strings.Contains(err.Error(), token) {
			t.Errorf("%s: token in %q", tt.name, err)
		}
	}
}

func TestConcurrentUseIsSafe(t *testing.T) {
	sim := newSim(t)
	c := newClient(t, sim.URL, func(o *sytex.Options) { o.PageSize = 5 })
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("box-%d", i%4)
			if _, err := c.Create(testCtx(t), sytex.CreateRequest{Name: name, Code: "c", NETypeID: 321}); err != nil {
				t.Error(err)
			}
			if _, err := c.FindByName(testCtx(t), name); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got, err := c.FindByName(testCtx(t), "box-1")
	if err != nil || len(got) != 4 {
		t.Errorf("box-1: %d %v", len(got), err)
	}
}
