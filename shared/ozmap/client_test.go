package ozmap_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap/ozmaptest"
)

const apiKey = "s3cr3t-api-key-do-not-leak"

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newClient(t *testing.T, baseURL string, mod func(*ozmap.Options)) *ozmap.Client {
	t.Helper()
	o := ozmap.Options{BaseURL: baseURL, APIKey: apiKey, MaxAttempts: 3, RetryBaseDelay: time.Millisecond}
	if mod != nil {
		mod(&o)
	}
	c, err := ozmap.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// collect drains Boxes and returns the good boxes, the bad rows and the
// fatal error.
func collect(ctx context.Context, c *ozmap.Client) (boxes []ozmap.Box, bad []ozmap.Row, err error) {
	for r, err := range c.Boxes(ctx) {
		if err != nil {
			return boxes, bad, err
		}
		if r.Err != nil {
			bad = append(bad, r)
			continue
		}
		boxes = append(boxes, r.Box)
	}
	return boxes, bad, nil
}

func implantedIDs(s *ozmaptest.Server) []string {
	var ids []string
	for _, b := range s.Boxes() {
		if b.Implanted {
			ids = append(ids, b.ID)
		}
	}
	return ids
}

func ids(boxes []ozmap.Box) []string {
	out := make([]string, len(boxes))
	for i, b := range boxes {
		out[i] = b.ID
	}
	return out
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name string
		o    ozmap.Options
		ok   bool
	}{
		{"ok", ozmap.Options{BaseURL: "https://client.ozmap.com.br:9994", APIKey: "k"}, true},
		{"trailing slash", ozmap.Options{BaseURL: "http://127.0.0.1:1/", APIKey: "k"}, true},
		{"no key", ozmap.Options{BaseURL: "https://x"}, false},
		{"blank key", ozmap.Options{BaseURL: "https://x", APIKey: "  "}, false},
		{"relative", ozmap.Options{BaseURL: "client.ozmap.com.br", APIKey: "k"}, false},
		{"ftp", ozmap.Options{BaseURL: "ftp://x", APIKey: "k"}, false},
		{"userinfo", ozmap.Options{BaseURL: "https://u:p@x", APIKey: "k"}, false},
		{"empty", ozmap.Options{APIKey: "k"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ozmap.New(tt.o)
			if (err == nil) != tt.ok {
				t.Fatalf("New: err = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && tt.o.APIKey != "" && len(tt.o.APIKey) > 2 && strings.Contains(err.Error(), tt.o.APIKey) {
				t.Fatalf("error leaks key: %v", err)
			}
		})
	}
}

func TestBoxesPaging(t *testing.T) {
	tests := []struct {
		name     string
		opts     []ozmaptest.Option
		n        int
		pageSize int
		requests int64
	}{
		{"server caps limit", []ozmaptest.Option{ozmaptest.WithMaxPageSize(10)}, 95, 500, 0},
		{"no hasNextPage", []ozmaptest.Option{ozmaptest.WithoutNextPage(), ozmaptest.WithMaxPageSize(10)}, 95, 500, 0},
		{"exact multiple without hasNextPage", []ozmaptest.Option{ozmaptest.WithoutNextPage()}, 40, 10, 0},
		{"single page", nil, 30, 500, 1},
		{"empty", nil, 0, 500, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ozmaptest.NewServer(apiKey, tt.opts...)
			defer s.Close()
			s.PutBoxes(ozmaptest.GenerateBoxes(tt.n, 1, ozmaptest.DefaultBoxTypes()))
			c := newClient(t, s.URL, func(o *ozmap.Options) { o.PageSize = tt.pageSize })

			boxes, bad, err := collect(testCtx(t), c)
			if err != nil || len(bad) > 0 {
				t.Fatalf("err %v, bad rows %v", err, bad)
			}
			want := implantedIDs(s)
			if got := ids(boxes); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("got %d boxes, want the %d implanted ones exactly once", len(got), len(want))
			}
			if tt.requests > 0 && s.Requests() != tt.requests {
				t.Errorf("%d requests, want %d", s.Requests(), tt.requests)
			}
		})
	}
}

func TestBoxesServerIgnoresFilter(t *testing.T) {
	s := ozmaptest.NewServer(apiKey, ozmaptest.WithIgnoreFilter())
	defer s.Close()
	s.PutBox(ozmaptest.Box{ID: "b1", Implanted: true})
	s.PutBox(ozmaptest.Box{ID: "b2", Implanted: false})
	boxes, _, err := collect(testCtx(t), newClient(t, s.URL, nil))
	if err != nil {
		t.Fatal(err)
	}
	// The client passes the row through with Implanted=false: the caller's
	// re-check is what keeps it out of Sytex.
	if len(boxes) != 2 || !boxes[0].Implanted || boxes[1].Implanted {
		t.Fatalf("boxes = %+v", boxes)
	}
}

func TestBoxDecoding(t *testing.T) {
	s := ozmaptest.NewServer(apiKey)
	defer s.Close()
	updated := time.Date(2022, 8, 4, 19, 42, 7, 427e6, time.UTC)
	s.PutBox(ozmaptest.Box{
		ID: "5da61d35493d9c0006665404", Name: "POP - 1", Implanted: true,
		Coords:  []float64{-48.527222871780396, -27.576655030562492}, // [lng, lat]
		BoxType: map[string]any{"_id": "t1", "code": "CEO"}, Project: "p1", UpdatedAt: updated,
	})
	s.PutBox(ozmaptest.Box{ID: "5da61d35493d9c0006665405", Name: "CTO-2", Implanted: true, BoxType: "t2", Lat: -27.5, Lng: -48.6})

	boxes, _, err := collect(testCtx(t), newClient(t, s.URL, nil))
	if err != nil || len(boxes) != 2 {
		t.Fatalf("boxes %v err %v", boxes, err)
	}
	want := []ozmap.Box{
		{ID: "5da61d35493d9c0006665404", Name: "POP - 1", TypeID: "t1", TypeCode: "CEO", Lat: -27.576655030562492, Lng: -48.527222871780396, HasCoords: true, Implanted: true, ProjectID: "p1", UpdatedAt: updated},
		{ID: "5da61d35493d9c0006665405", Name: "CTO-2", TypeID: "t2", Lat: -27.5, Lng: -48.6, HasCoords: true, Implanted: true},
	}
	for i := range want {
		got := boxes[i]
		got.UpdatedAt = got.UpdatedAt.UTC()
		if i == 1 {
			got.UpdatedAt = time.Time{} // set by the simulator
		}
		if got != want[i] {
			t.Errorf("box %d:\n got %+v\nwant %+v", i, got, want[i])
		}
	}
}

func TestHostileRows(t *testing.T) {
	s := ozmaptest.NewServer(apiKey, ozmaptest.WithMaxPageSize(3))
	defer s.Close()
	s.PutBoxes(ozmaptest.GenerateBoxes(5, 2, nil))
	hostile := []string{
		`{"id":"h1","name":"x","implanted":"yes"}`,
		`{"id":42,"name":"x","implanted":true}`,
		`{"implanted":true}`,
		`"just a string"`,
		`null`,
		`{"id":"h2","implanted":true,"updatedAt":12}`,
		`{"id":"h3","implanted":true,"coords":"-48,-27"}`,
		`{"id":"h4","implanted":true,"coords":[-27.5,-148.5]}`,
		`{"id":"h5","implanted":true,"boxType":7}`,
		`{"id":"h6","implanted":true,"lat":"abc","lng":1}`,
		`{"id":"h7","implanted":true,"note":"` + apiKey + `"}`,
	}
	var raw []json.RawMessage
	for _, h := range hostile {
		raw = append(raw, json.RawMessage(h))
	}
	raw[len(raw)-1] = json.RawMessage(`{"id":"h7","implanted":1,"note":"` + apiKey + `"}`)
	raw = append(raw, json.RawMessage(`{"id":"ok1","implanted":true,"lat":"-27.5","lng":" -48.5 "}`)) // name missing: fine
	s.SetRawRows(raw)

	boxes, bad, err := collect(testCtx(t), newClient(t, s.URL, nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(boxes) != len(implantedIDs(s))+1 {
		t.Fatalf("%d good boxes, want %d", len(boxes), len(implantedIDs(s))+1)
	}
	last := boxes[len(boxes)-1]
	if last.ID != "ok1" || last.Lat != -27.5 || last.Lng != -48.5 || !last.HasCoords || last.Name != "" {
		t.Errorf("numeric-string coords row = %+v", last)
	}
	wantErr := []string{"field implanted: want boolean, got string", "field id: want string, got number", "field id: missing",
		"want object, got string", "want object, got null", "field updatedAt", "field coords", "field coords: latitude -148.5 out of range", "field boxType", "field lat", "field implanted"}
	if len(bad) != len(wantErr) {
		t.Fatalf("%d bad rows, want %d: %v", len(bad), len(wantErr), bad)
	}
	for i, r := range bad {
		if !strings.Contains(r.Err.Error(), wantErr[i]) {
			t.Errorf("row %d: err %q, want it to mention %q", i, r.Err, wantErr[i])
		}
		if !json.Valid(r.Raw) || len(r.Raw) == 0 {
			t.Errorf("row %d: Raw %q is not JSON", i, r.Raw)
		}
		if strings.Contains(string(r.Raw), apiKey) || strings.Contains(r.Err.Error(), apiKey) {
			t.Errorf("row %d leaks the key", i)
		}
	}
}

func TestHugeRowRawIsBounded(t *testing.T) {
	s := ozmaptest.NewServer(apiKey)
	defer s.Close()
	big := `{"id":"big","implanted":"no","observation":"` + strings.Repeat(`\u0001`, 10000) + `"}`
	s.SetRawRows([]json.RawMessage{json.RawMessage(big)})
	_, bad, err := collect(testCtx(t), newClient(t, s.URL, nil))
	if err != nil || len(bad) != 1 {
		t.Fatalf("bad %v err %v", bad, err)
	}
	if len(bad[0].Raw) > 4096 || !json.Valid(bad[0].Raw) {
		t.Errorf("Raw is %d bytes, valid=%v", len(bad[0].Raw), json.Valid(bad[0].Raw))
	}
}

func TestUnauthorized(t *testing.T) {
	s := ozmaptest.NewServer("another-key")
	defer s.Close()
	_, _, err := collect(testCtx(t), newClient(t, s.URL, nil))
	if !errors.Is(err, ozmap.ErrUnauthorized) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
	var ae *ozmap.APIError
	if !errors.As(err, &ae) || ae.Status != 401 {
		t.Fatalf("err = %v, want an APIError with status 401", err)
	}
	if strings.Contains(err.Error(), apiKey) {
		t.Fatalf("error leaks the key: %v", err)
	}
	if ozmap.IsTransient(err) {
		t.Error("401 must not be transient")
	}
	if s.Requests() != 1 {
		t.Errorf("%d requests, want 1 (no retry on 401)", s.Requests())
	}
	if _, err := newClient(t, s.URL, nil).BoxTypes(testCtx(t)); !errors.Is(err, ozmap.ErrUnauthorized) {
		t.Errorf("BoxTypes err = %v", err)
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name      string
		fail      int
		n         int
		outage    bool
		wantErr   bool
		requests  int64
		minWait   time.Duration
		retryWait time.Duration // Options.MaxRetryAfter
	}{
		{"500 twice then success", 500, 2, false, false, 3, 0, 0},
		{"429 with Retry-After bounded", 429, 2, false, false, 3, 0, 5 * time.Millisecond},
		{"503 with Retry-After honoured", 503, 1, false, false, 2, 900 * time.Millisecond, 0},
		{"persistent 503", 0, 0, true, true, 3, 0, 0},
		{"404 not retried", 404, 5, false, true, 1, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ozmaptest.NewServer(apiKey)
			defer s.Close()
			s.PutBox(ozmaptest.Box{ID: "b1", Implanted: true})
			if tt.n > 0 {
				s.FailNext(tt.fail, tt.n)
			}
			s.SetOutage(tt.outage)
			c := newClient(t, s.URL, func(o *ozmap.Options) { o.MaxRetryAfter = tt.retryWait })
			start := time.Now()
			boxes, _, err := collect(testCtx(t), c)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && len(boxes) != 1 {
				t.Fatalf("boxes = %v", boxes)
			}
			if s.Requests() != tt.requests {
				t.Errorf("%d requests, want %d", s.Requests(), tt.requests)
			}
			if d := time.Since(start); d < tt.minWait {
				t.Errorf("finished after %v, want at least %v (Retry-After)", d, tt.minWait)
			}
			if tt.outage {
				want := "ozmap: GET /api/v2/boxes page 1: 503 Service Unavailable after 3 attempts: "
				if !strings.HasPrefix(err.Error(), want) {
					t.Errorf("err = %q, want prefix %q", err, want)
				}
				if !ozmap.IsTransient(err) {
					t.Error("persistent 503 should still be IsTransient")
				}
			}
		})
	}
}

func TestContextCancelStopsRetrying(t *testing.T) {
	s := ozmaptest.NewServer(apiKey)
	defer s.Close()
	s.SetOutage(true)
	c := newClient(t, s.URL, func(o *ozmap.Options) { o.MaxAttempts = 1000; o.RetryBaseDelay = 20 * time.Millisecond })
	ctx, cancel := context.WithTimeout(testCtx(t), 200*time.Millisecond)
	defer cancel()
	_, _, err := collect(ctx, c)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context deadline", err)
	}
}

func TestEarlyBreak(t *testing.T) {
	s := ozmaptest.NewServer(apiKey, ozmaptest.WithMaxPageSize(2))
	defer s.Close()
	s.PutBoxes(ozmaptest.GenerateBoxes(20, 3, nil))
	n := 0
	for _, err := range newClient(t, s.URL, nil).Boxes(testCtx(t)) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n == 3 {
			break
		}
	}
	// Pages 1 and 2, and perhaps page 3, read ahead while row 3 was
	// handled (Boxes reads one page ahead), never more.
	if r := s.Requests(); r < 2 || r > 3 {
		t.Errorf("%d requests after breaking on row 3, want 2 or 3", r)
	}
}

func TestBoxTypes(t *testing.T) {
	s := ozmaptest.NewServer(apiKey, ozmaptest.WithMaxPageSize(2), ozmaptest.WithoutNextPage())
	defer s.Close()
	for _, bt := range ozmaptest.DefaultBoxTypes() {
		s.PutBoxType(bt)
	}
	got, err := newClient(t, s.URL, nil).BoxTypes(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got["64b000000000000000000001"] != "CTO" || got["64b000000000000000000003"] != "CTX" {
		t.Errorf("BoxTypes = %v", got)
	}
}

// handlerServer is a raw server for answers the simulator does not give.
func handlerServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestBadBodies(t *testing.T) {
	t.Run("HTML with 200", func(t *testing.T) {
		srv, n := handlerServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, "<html><body>Login</body></html>")
		})
		_, _, err := collect(testCtx(t), newClient(t, srv.URL, nil))
		if !errors.Is(err, ozmap.ErrNotJSON) || !strings.Contains(err.Error(), "text/html") || !strings.Contains(err.Error(), "<html>") {
			t.Fatalf("err = %v", err)
		}
		// A proxy's page passes: retried within MaxAttempts (3 here).
		if !ozmap.IsTransient(err) || n.Load() != 3 {
			t.Errorf("transient=%v requests=%d, want transient after 3", ozmap.IsTransient(err), n.Load())
		}
	})
	t.Run("truncated JSON is retried", func(t *testing.T) {
		var page1 atomic.Int64
		srv, n := handlerServer(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("page") != "1" {
				fmt.Fprint(w, `{"rows":[]}`)
				return
			}
			if page1.Add(1) == 1 {
				fmt.Fprint(w, `{"total":1,"rows":[{"id":"a","impl`)
				return
			}
			fmt.Fprint(w, `{"total":1,"rows":[{"id":"a","implanted":true}]}`)
		})
		boxes, _, err := collect(testCtx(t), newClient(t, srv.URL, nil))
		if err != nil || len(boxes) != 1 || n.Load() != 3 {
			t.Fatalf("boxes %v err %v requests %d", boxes, err, n.Load())
		}
	})
	t.Run("body over MaxBodyBytes", func(t *testing.T) {
		srv, _ := handlerServer(t, func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `{"rows":[{"id":"a","implanted":true,"observation":"%s"}]}`, strings.Repeat("x", 4096))
		})
		_, _, err := collect(testCtx(t), newClient(t, srv.URL, func(o *ozmap.Options) { o.MaxBodyBytes = 1024 }))
		if !errors.Is(err, ozmap.ErrBodyTooLarge) || ozmap.IsTransient(err) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("key echoed in error body", func(t *testing.T) {
		srv, _ := handlerServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
			fmt.Fprintf(w, "bad key %s", r.Header.Get("Authorization"))
		})
		_, _, err := collect(testCtx(t), newClient(t, srv.URL, nil))
		var ae *ozmap.APIError
		if err == nil || strings.Contains(err.Error(), apiKey) || !errors.As(err, &ae) || strings.Contains(ae.Body, apiKey) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestHeaders(t *testing.T) {
	srv, _ := handlerServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != apiKey || r.Header.Get("Accept") != "application/json" || r.Header.Get("User-Agent") != "ozmap-sytex-sync" {
			w.WriteHeader(400)
			return
		}
		q := r.URL.Query()
		if r.URL.Path != "/api/v2/boxes" || q.Get("limit") != "500" || q.Get("filter") != `[{"property":"implanted","operator":"=","value":true}]` {
			w.WriteHeader(400)
			return
		}
		fmt.Fprint(w, `{"rows":[]}`)
	})
	if _, _, err := collect(testCtx(t), newClient(t, srv.URL, nil)); err != nil {
		t.Fatal(err)
	}
}

func TestPagingGuards(t *testing.T) {
	t.Run("repeated page", func(t *testing.T) {
		srv, n := handlerServer(t, func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, `{"rows":[{"id":"a","implanted":true}],"hasNextPage":true,"nextUrl":"/api/v2/boxes?page=1"}`)
		})
		_, _, err := collect(testCtx(t), newClient(t, srv.URL, nil))
		if !errors.Is(err, ozmap.ErrPagingLoop) || n.Load() != 2 {
			t.Fatalf("err %v after %d requests", err, n.Load())
		}
	})
	t.Run("endless distinct pages with known total", func(t *testing.T) {
		srv, n := handlerServer(t, func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `{"total":4,"rows":[{"id":"%s","implanted":true},{"id":"%[1]s-b","implanted":true}]}`, r.URL.Query().Get("page"))
		})
		_, _, err := collect(testCtx(t), newClient(t, srv.URL, nil))
		if !errors.Is(err, ozmap.ErrPagingLoop) || n.Load() != 14 {
			t.Fatalf("err %v after %d requests, want loop error after 4/2*2+10=14", err, n.Load())
		}
	})
	t.Run("nextUrl to another host is ignored", func(t *testing.T) {
		evil, evilHits := handlerServer(t, func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, `{"rows":[]}`)
		})
		srv, _ := handlerServer(t, func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Query().Get("page") {
			case "1":
				fmt.Fprintf(w, `{"rows":[{"id":"a","implanted":true}],"hasNextPage":true,"nextUrl":%q}`, evil.URL+"/api/v2/boxes?page=2")
			case "2":
				fmt.Fprint(w, `{"rows":[{"id":"b","implanted":true}],"hasNextPage":false,"nextUrl":null}`)
			default:
				w.WriteHeader(400)
			}
		})
		boxes, _, err := collect(testCtx(t), newClient(t, srv.URL, nil))
		if err != nil || len(boxes) != 2 || evilHits.Load() != 0 {
			t.Fatalf("boxes %v err %v evil hits %d", boxes, err, evilHits.Load())
		}
	})
}
