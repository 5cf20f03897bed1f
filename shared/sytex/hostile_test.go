package sytex_test

import (
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/sytex"
)

// assertNoToken fails when s holds the token or a sizeable piece of it.
func assertNoToken(t *testing.T, s string) {
	t.Helper()
	for i := 0; i+6 <= len(token); i++ {
		if strings.Contains(s, token[i:i+6]) {
			t.Fatalf("leaks (part of) the token: %s", s)
		}
	}
}

// TestHostileAnswers: what the client makes of each kind of nonsense. The
// consumer's contract: sytex.IsPermanent (a 4xx other than 401/403, 408,
// 429) dead-letters at once; anything else is retried and dead-lettered only
// after CONSUMER_MAX_ATTEMPTS. A garbage 2xx is almost always a proxy or an
// outage page, so it is a *ResponseError, never permanent.
func TestHostileAnswers(t *testing.T) {
	html := "<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>"
	search := func(ctx context.Context, c *sytex.Client) error { _, err := c.FindByName(ctx, "CTO-1"); return err }
	create := func(ctx context.Context, c *sytex.Client) error {
		_, err := c.Create(ctx, sytex.CreateRequest{Name: "CTO-1", Code: "CTO-1", NETypeID: 321, Latitude: -27.5, Longitude: -48.5})
		return err
	}
	patch := func(ctx context.Context, c *sytex.Client) error {
		nt := int64(322)
		_, err := c.Update(ctx, 7, sytex.Patch{NETypeID: &nt})
		return err
	}
	tests := []struct {
		name      string
		status    int
		ctype     string
		body      string
		op        func(context.Context, *sytex.Client) error
		apiStatus int // *APIError status; 0 means a *ResponseError
		permanent bool
		auth      bool
		inText    string
	}{
		{"HTML page with 200", 200, "text/html", html, search, 0, false, false,
			`unusable response (status 200): body is not JSON (Content-Type "text/html", 65 bytes); body starts "<!DOCTYPE html>`},
		{"truncated JSON", 200, "application/json", `{"count":1,"next":null,"results":[{"id":1,"name":"CT`, search, 0, false, false,
			"page: unexpected end of JSON input"},
		{"200 with an empty body", 200, "application/json", "", search, 0, false, false,
			`body is empty (Content-Type "application/json", 0 bytes)`},
		{"201 with an empty body", 201, "", "", create, 0, false, false,
			`POST /api/networkelement/: unusable response (status 201): body is empty`},
		{"create answers HTML", 201, "text/html", html, create, 0, false, false,
			"body is not a JSON object"},
		{"id of the wrong type", 200, "application/json", `{"count":1,"next":null,"results":[{"id":"abc","name":"CTO-1"}]}`, search, 0, false, false,
			"element id is missing or not a positive integer"},
		{"name of the wrong type", 200, "application/json", `{"id":7,"name":["CTO-1"]}`, patch, 0, false, false,
			"element 7: name is missing or not a string"},
		{"results of the wrong type", 200, "application/json", `{"count":1,"next":null,"results":"none"}`, search, 0, false, false,
			`page has no "results" list`},
		{"latitude of the wrong type", 200, "application/json",
			`{"id":7,"name":"CTO-1","networkelementcoordinates_set":[{"latitude":true,"longitude":1}]}`, patch, 0, false, false,
			"latitude is not a number"},
		{"500 with an HTML body", 500, "text/html", html, search, 500, false, false,
			"GET /api/networkelement/: 500 Internal Server Error: <!DOCTYPE html>"},
		{"502 from the proxy on a write", 502, "text/html", html, create, 502, false, false,
			"POST /api/networkelement/: 502 Bad Gateway: <!DOCTYPE"},
		{"401", 401, "application/json", `{"detail":"Invalid token."}`, search, 401, true, true,
			`401 Unauthorized: {"detail":"Invalid token."}`},
		{"403 with HTML", 403, "text/html", "<html>Forbidden</html>", create, 403, true, true,
			"403 Forbidden: <html>Forbidden</html>"},
		{"400 with HTML", 400, "text/html", "<html>Bad Request</html>", create, 400, true, false,
			"400 Bad Request: <html>Bad Request</html>"},
		{"unexpected 2xx", 204, "", "", patch, 0, false, false,
			"unexpected status 204"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := fixed(t, tt.status, tt.ctype, tt.body)
			err := tt.op(testCtx(t), newClient(t, srv.URL))
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			t.Log(msg)
			assertNoToken(t, msg)
			if !strings.Contains(msg, tt.inText) {
				t.Errorf("error %q\ndoes not say %q", msg, tt.inText)
			}
			var ae *sytex.APIError
			var re *sytex.ResponseError
			switch {
			case tt.apiStatus != 0 && (!errors.As(err, &ae) || ae.Status != tt.apiStatus):
				t.Errorf("want *APIError %d", tt.apiStatus)
			case tt.apiStatus == 0 && !errors.As(err, &re):
				t.Errorf("want *ResponseError")
			}
			if got := sytex.IsPermanent(err); got != tt.permanent {
				t.Errorf("IsPermanent = %v, want %v", got, tt.permanent)
			}
			if got := sytex.IsAuth(err); got != tt.auth {
				t.Errorf("IsAuth = %v, want %v", got, tt.auth)
			}
		})
	}
}

// TestTokenCutByTheLimitIsNotShown: a body echoing the token right where the
// error keeps only the first bytes must not show the token's beginning.
func TestTokenCutByTheLimitIsNotShown(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		pad    int
	}{
		{"ResponseError snippet (160 bytes)", 200, 150},
		{"APIError body (512 bytes)", 500, 505},
		{"far beyond the limits of a huge body", 200, 4 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, "<"+strings.Repeat("x", tc.pad)+r.Header.Get("Authorization")+strings.Repeat("y", 600))
			}))
			t.Cleanup(srv.Close)
			_, err := newClient(t, srv.URL).FindByName(testCtx(t), "x")
			if err == nil {
				t.Fatal("no error")
			}
			assertNoToken(t, err.Error())
			var ae *sytex.APIError
			if errors.As(err, &ae) {
				assertNoToken(t, ae.Body)
			}
			var re *sytex.ResponseError
			if errors.As(err, &re) {
				assertNoToken(t, re.Snippet)
			}
		})
	}
}

// hugeBody streams size bytes and reports whether a write failed (the client
// hung up before the end).
type hugeBody struct {
	written atomic.Int64
	done    chan error
}

func serveHuge(t *testing.T, status, size int, declareLength, gz bool) (*httptest.Server, *hugeBody) {
	h := &hugeBody{done: make(chan error, 1)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var out io.Writer = w
		if declareLength {
			w.Header().Set("Content-Length", strconv.Itoa(size))
		}
		var zw *gzip.Writer
		if gz {
			w.Header().Set("Content-Encoding", "gzip")
			zw = gzip.NewWriter(w)
			out = zw
		}
		w.WriteHeader(status)
		chunk := []byte(strings.Repeat(" ", 32<<10))
		var err error
		if _, err = io.WriteString(out, `{"count":1,"next":null,"results":[`); err == nil {
			for h.written.Load() < int64(size) && err == nil {
				var n int
				n, err = out.Write(chunk)
				h.written.Add(int64(n))
			}
		}
		if zw != nil && err == nil {
			err = zw.Close()
		}
		h.done <- err
	}))
	t.Cleanup(srv.Close)
	return srv, h
}

// TestHugeBody: a 50 MB answer is read up to the cap (8 MiB by default, 64
// KiB for an error body) and no further: the connection is dropped and the
// error names the limit. It is not permanent (see ResponseError).
func TestHugeBody(t *testing.T) {
	const size = 50 << 20
	tests := []struct {
		name          string
		status        int
		declareLength bool
		gzip          bool
		inText        string
	}{
		{"streamed 200", 200, false, false, "response body exceeds 8388608 bytes (MaxBodyBytes); stopped reading there"},
		{"Content-Length over the cap", 200, true, false, "response body exceeds 8388608 bytes (MaxBodyBytes): it announced 52428800; not read"},
		{"gzip bomb", 200, false, true, "response body exceeds 8388608 bytes"},
		{"streamed 500", 500, false, false, "500 Internal Server Error: {"},
		{"500 with Content-Length", 500, true, false, "500 Internal Server Error: {"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, h := serveHuge(t, tt.status, size, tt.declareLength, tt.gzip)
			_, err := newClient(t, srv.URL).FindByName(testCtx(t), "x")
			if err == nil || !strings.Contains(err.Error(), tt.inText) {
				t.Fatalf("err = %v\nwant it to say %q", err, tt.inText)
			}
			if len(err.Error()) > 1024 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
			if sytex.IsPermanent(err) {
				t.Error("classified permanent")
			}
			var werr error
			select {
			case werr = <-h.done:
			case <-testCtx(t).Done():
				t.Fatal("handler still writing: the client did not hang up")
			}
			if tt.gzip {
				return // 50 MB of spaces compress to ~50 KB: the server may well have sent it all
			}
			if werr == nil || h.written.Load() >= size {
				t.Errorf("the handler wrote %d bytes (err %v): the client read past its cap", h.written.Load(), werr)
			}
		})
	}
}

// TestRedirectToAnotherHost: never followed, so neither the token nor the
// Organization header reach the other host, and the error says where it
// pointed (without the query, which may carry anything).
func TestRedirectToAnotherHost(t *testing.T) {
	var hits atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, `{"count":0,"next":null,"results":[]}`)
	}))
	t.Cleanup(other.Close)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/api/networkelement/?t="+r.Header.Get("Authorization"), http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	for _, op := range []string{"search", "create"} {
		var err error
		c := newClient(t, srv.URL)
		if op == "search" {
			_, err = c.FindByName(testCtx(t), "x")
		} else {
			_, err = c.Create(testCtx(t), sytex.CreateRequest{Name: "n", Code: "c", NETypeID: 1})
		}
		t.Log(err)
		var ae *sytex.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusFound {
			t.Fatalf("%s: err = %v, want *APIError 302", op, err)
		}
		want := `302 Found: redirect to "` + other.URL + `/api/networkelement/" not followed`
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %q\nwant it to say %q", op, err, want)
		}
		assertNoToken(t, err.Error())
		if sytex.IsPermanent(err) || sytex.IsAuth(err) {
			t.Errorf("%s: classified permanent/auth", op)
		}
	}
	if hits.Load() != 0 {
		t.Errorf("the other host got %d requests", hits.Load())
	}
}

// TestConnectionCutMidBody: a body shorter than announced is a transport
// error (transient), not a decoding error.
func TestConnectionCutMidBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		_, _ = io.WriteString(w, `{"count":1,"next":null,"results":[`)
	}))
	t.Cleanup(srv.Close)
	_, err := newClient(t, srv.URL).FindByName(testCtx(t), "x")
	var ae *sytex.APIError
	var re *sytex.ResponseError
	if err == nil || errors.As(err, &ae) || errors.As(err, &re) || sytex.IsPermanent(err) ||
		!strings.Contains(err.Error(), "sytex: GET /api/networkelement/: unexpected EOF") {
		t.Fatalf("err = %v, want a transient transport error", err)
	}
}
