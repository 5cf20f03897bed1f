package ozmap_test

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap"
)

// assertNoKey fails when s holds the API key or a sizeable piece of it.
func assertNoKey(t *testing.T, s string) {
	t.Helper()
	for i := 0; i+8 <= len(apiKey); i++ {
		if strings.Contains(s, apiKey[i:i+8]) {
			t.Fatalf("leaks (part of) the API key: %s", s)
		}
	}
}

// TestHostileAnswers: what the client does with each kind of nonsense a
// server or something in front of it can answer. Every error names the
// request and the cause, never holds the key, and is classified.
func TestHostileAnswers(t *testing.T) {
	html := "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
	tests := []struct {
		name      string
		handler   http.HandlerFunc
		requests  int64  // requests the client makes (MaxAttempts is 3)
		transient bool   // ozmap.IsTransient
		is        error  // errors.Is target, if any
		status    int    // *APIError status, if any
		inText    string // the cause, as the error says it
	}{
		{
			name: "HTML page with 200",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				fmt.Fprint(w, html)
			},
			requests: 3, transient: true, is: ozmap.ErrNotJSON,
			inText: `GET /api/v2/boxes page 1: failed after 3 attempts: response is not JSON (status 2xx, Content-Type "text/html; charset=utf-8", 89 bytes, body starts "<!DOCTYPE html>`,
		},
		{
			name: "truncated JSON every time",
			handler: func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, `{"total":2,"rows":[{"id":"a","implanted":tr`)
			},
			requests: 3, transient: true,
			inText: "failed after 3 attempts: page body is truncated (43 bytes): unexpected EOF",
		},
		{
			name: "connection cut mid-body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "1000")
				fmt.Fprint(w, `{"rows":[`)
			},
			requests: 3, transient: true,
			inText: "failed after 3 attempts: reading response body: unexpected EOF",
		},
		{
			name:     "200 with an empty body",
			handler:  func(w http.ResponseWriter, r *http.Request) {},
			requests: 3, transient: true, is: ozmap.ErrNotJSON,
			inText: "response is not JSON: the body is empty",
		},
		{
			name: "plain text 200",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				fmt.Fprint(w, "OK")
			},
			requests: 3, transient: true, is: ozmap.ErrNotJSON,
			inText: `body starts "OK"`,
		},
		{
			name: "JSON without rows",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, `{"data":[],"status":"ok"}`)
			},
			requests: 1, is: ozmap.ErrNotJSON,
			inText: `response is JSON but not an OZmap page: no "rows"`,
		},
		{
			name: "rows of the wrong type",
			handler: func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, `{"total":1,"rows":{"id":"a"}}`)
			},
			requests: 1, is: ozmap.ErrNotJSON,
			inText: `"rows" is a object, want an array`,
		},
		{
			name: "a JSON array instead of the envelope",
			handler: func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, `[{"id":"a","implanted":true}]`)
			},
			requests: 1, is: ozmap.ErrNotJSON,
			inText: "want an object, got array",
		},
		{
			name: "500 with an HTML body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				w.WriteHeader(500)
				fmt.Fprint(w, html)
			},
			requests: 3, transient: true, status: 500,
			inText: "GET /api/v2/boxes page 1: 500 Internal Server Error after 3 attempts: <!DOCTYPE html>",
		},
		{
			name: "401 with an HTML body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				w.WriteHeader(401)
				fmt.Fprint(w, "<html>Unauthorized</html>")
			},
			requests: 1, is: ozmap.ErrUnauthorized, status: 401,
			inText: "401 Unauthorized: the API key was rejected or lacks access",
		},
		{
			name: "403",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(403)
				fmt.Fprint(w, `{"message":"Forbidden"}`)
			},
			requests: 1, is: ozmap.ErrUnauthorized, status: 403,
			inText: "403 Forbidden: the API key was rejected",
		},
		{
			name: "key echoed in an HTML 200, cut by the snippet",
			handler: func(w http.ResponseWriter, r *http.Request) {
				// The key starts at byte 50 of the body: the 64-byte
				// snippet would hold its first 14 bytes.
				fmt.Fprint(w, "<html>"+strings.Repeat("x", 44)+r.Header.Get("Authorization")+"</html>")
			},
			requests: 3, transient: true, is: ozmap.ErrNotJSON,
			inText: `body starts "<html>xxxx`,
		},
		{
			name: "key echoed in a 500 body, cut at 512 bytes",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(500)
				fmt.Fprint(w, strings.Repeat("y", 500)+r.Header.Get("Authorization"))
			},
			requests: 3, transient: true, status: 500,
			inText: "yyyy",
		},
		{
			name: "key echoed in Content-Type",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html; x="+r.Header.Get("Authorization"))
				fmt.Fprint(w, "<p>")
			},
			requests: 3, transient: true, is: ozmap.ErrNotJSON,
			inText: "[REDACTED]",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, n := handlerServer(t, tt.handler)
			_, _, err := collect(testCtx(t), newClient(t, srv.URL, nil))
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			t.Log(msg)
			assertNoKey(t, msg)
			if !strings.Contains(msg, tt.inText) {
				t.Errorf("error %q\ndoes not say %q", msg, tt.inText)
			}
			if got := ozmap.IsTransient(err); got != tt.transient {
				t.Errorf("IsTransient = %v, want %v", got, tt.transient)
			}
			if n.Load() != tt.requests {
				t.Errorf("%d requests, want %d", n.Load(), tt.requests)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v) = false", tt.is)
			}
			var ae *ozmap.APIError
			if tt.status != 0 && (!errors.As(err, &ae) || ae.Status != tt.status) {
				t.Errorf("want an *APIError with status %d", tt.status)
			}
			if ae != nil {
				assertNoKey(t, ae.Body)
			}
		})
	}
}

// TestWrongTypedFields: a field of the wrong type in a row makes that row an
// error (dead-lettered by the producer), not the whole run; a wrong-typed
// envelope field is ignored.
func TestWrongTypedFields(t *testing.T) {
	srv, _ := handlerServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("page") != "1" {
			fmt.Fprint(w, `{"rows":[]}`)
			return
		}
		fmt.Fprint(w, `{"total":"many","hasNextPage":"yes","rows":[
			{"id":"a","name":"CTO-1","implanted":true,"coords":"-48.5,-27.5"},
			{"id":"b","name":"CTO-2","implanted":true,"coords":[-48.5,-27.5],"project":12},
			{"id":"c","name":"CTO-3","implanted":true,"coords":[-48.5,-27.5]}]}`)
	})
	boxes, bad, err := collect(testCtx(t), newClient(t, srv.URL, nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(boxes) != 1 || boxes[0].ID != "c" || len(bad) != 2 {
		t.Fatalf("boxes %+v bad %+v", boxes, bad)
	}
	for i, want := range []string{"field coords: want [lng, lat] array, got string", "field project: want id string or object, got number"} {
		if !strings.Contains(bad[i].Err.Error(), want) {
			t.Errorf("row %d: %v, want %q", i, bad[i].Err, want)
		}
	}
}

// hugeBody streams size bytes of a JSON-looking page from a handler and
// reports how many bytes it managed to write and whether a write failed
// (the client hung up).
type hugeBody struct {
	size    int
	written atomic.Int64
	done    chan error
}

func newHugeBody(size int) *hugeBody { return &hugeBody{size: size, done: make(chan error, 1)} }

func (h *hugeBody) serve(w http.ResponseWriter, r *http.Request, declareLength, gz bool) {
	var out io.Writer = w
	if declareLength {
		w.Header().Set("Content-Length", strconv.Itoa(h.size))
	}
	var zw *gzip.Writer
	if gz {
		w.Header().Set("Content-Encoding", "gzip")
		zw = gzip.NewWriter(w)
		out = zw
	}
	chunk := []byte(strings.Repeat(" ", 32<<10))
	var err error
	if _, err = io.WriteString(out, `{"rows":[`); err == nil {
		for h.written.Load() < int64(h.size) && err == nil {
			var n int
			n, err = out.Write(chunk)
			h.written.Add(int64(n))
		}
	}
	if zw != nil && err == nil {
		err = zw.Close()
	}
	h.done <- err
}

// wait returns the handler's final write error (nil if it wrote it all).
func (h *hugeBody) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-h.done:
		return err
	case <-testCtx(t).Done():
		t.Fatal("handler still writing: the client did not hang up")
		return nil
	}
}

// TestHugeBody: a 50 MB answer is read up to the cap and no further; the
// connection is dropped, the error names the limit, and it is permanent (a
// page too large now is too large on every retry: lower OZMAP_PAGE_SIZE).
func TestHugeBody(t *testing.T) {
	const size = 50 << 20
	tests := []struct {
		name          string
		maxBody       int64
		declareLength bool
		gzip          bool
		inText        string
	}{
		{"streamed, default cap", 0, false, false, "response body exceeds the 33554432-byte limit (MaxBodyBytes); stopped reading there"},
		{"streamed, 1 MiB cap", 1 << 20, false, false, "response body exceeds the 1048576-byte limit"},
		{"Content-Length over the cap is not read", 1 << 20, true, false, "response body of 52428800 bytes exceeds the 1048576-byte limit (MaxBodyBytes); not read"},
		{"gzip bomb", 1 << 20, false, true, "response body exceeds the 1048576-byte limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHugeBody(size)
			srv, n := handlerServer(t, func(w http.ResponseWriter, r *http.Request) { h.serve(w, r, tt.declareLength, tt.gzip) })
			_, _, err := collect(testCtx(t), newClient(t, srv.URL, func(o *ozmap.Options) { o.MaxBodyBytes = tt.maxBody }))
			t.Log(err)
			if !errors.Is(err, ozmap.ErrBodyTooLarge) || !strings.Contains(err.Error(), tt.inText) {
				t.Fatalf("err = %v\nwant ErrBodyTooLarge saying %q", err, tt.inText)
			}
			if ozmap.IsTransient(err) || n.Load() != 1 {
				t.Errorf("transient=%v after %d requests, want permanent after 1", ozmap.IsTransient(err), n.Load())
			}
			werr := h.wait(t)
			if tt.gzip {
				return // 50 MB of spaces compress to ~50 KB: the server may well have sent it all
			}
			if werr == nil {
				t.Errorf("the handler wrote all %d bytes: the client read past its cap", size)
			}
			if w := h.written.Load(); w >= size {
				t.Errorf("handler wrote %d bytes", w)
			}
		})
	}
}

// TestRedirects: the key is only ever sent to BaseURL's origin. Go's own
// policy would forward the Authorization header to another port of the same
// host name (and to subdomains, and from https to http).
func TestRedirects(t *testing.T) {
	var (
		mu       sync.Mutex
		evilAuth []string
	)
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		evilAuth = append(evilAuth, r.Header.Get("Authorization"))
		mu.Unlock()
		fmt.Fprint(w, `{"rows":[]}`)
	}))
	t.Cleanup(evil.Close)

	t.Run("to another port is not followed", func(t *testing.T) {
		srv, n := handlerServer(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, evil.URL+"/api/v2/boxes?leak="+r.Header.Get("Authorization"), http.StatusFound)
		})
		_, _, err := collect(testCtx(t), newClient(t, srv.URL, nil))
		var ae *ozmap.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusFound {
			t.Fatalf("err = %v, want an *APIError 302", err)
		}
		t.Log(err)
		want := fmt.Sprintf(`302 Found: redirect to "%s/api/v2/boxes" not followed: it leaves %s`, evil.URL, srv.URL)
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %q\nwant it to say %q", err, want)
		}
		assertNoKey(t, err.Error())
		if ozmap.IsTransient(err) || n.Load() != 1 {
			t.Errorf("transient=%v after %d requests, want permanent after 1", ozmap.IsTransient(err), n.Load())
		}
		mu.Lock()
		defer mu.Unlock()
		if len(evilAuth) != 0 {
			t.Errorf("the other server got %d requests", len(evilAuth))
		}
	})

	t.Run("within BaseURL is followed with the key", func(t *testing.T) {
		srv, n := handlerServer(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/api/v2/boxes" {
				http.Redirect(w, r, "/v2-moved/boxes?"+r.URL.RawQuery, http.StatusMovedPermanently)
				return
			}
			if r.Header.Get("Authorization") != apiKey {
				w.WriteHeader(401)
				return
			}
			fmt.Fprint(w, `{"rows":[{"id":"a","implanted":true}],"hasNextPage":false}`)
		})
		boxes, _, err := collect(testCtx(t), newClient(t, srv.URL, nil))
		if err != nil || len(boxes) != 1 || n.Load() != 2 {
			t.Fatalf("boxes %v err %v after %d requests", boxes, err, n.Load())
		}
	})

	t.Run("redirect loop stops", func(t *testing.T) {
		srv, n := handlerServer(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, r.URL.String(), http.StatusFound)
		})
		_, _, err := collect(testCtx(t), newClient(t, srv.URL, nil))
		var ae *ozmap.APIError
		if !errors.As(err, &ae) || !strings.Contains(err.Error(), "more than 5 redirects") || n.Load() != 6 {
			t.Fatalf("err = %v after %d requests", err, n.Load())
		}
	})

	t.Run("the client's own CheckRedirect is replaced", func(t *testing.T) {
		srv, _ := handlerServer(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, evil.URL+"/api/v2/boxes", http.StatusTemporaryRedirect)
		})
		hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return nil }}
		_, _, err := collect(testCtx(t), newClient(t, srv.URL, func(o *ozmap.Options) { o.HTTPClient = hc }))
		if err == nil {
			t.Fatal("followed")
		}
		if hc.CheckRedirect == nil {
			t.Error("the caller's client was modified")
		}
		mu.Lock()
		defer mu.Unlock()
		if len(evilAuth) != 0 {
			t.Errorf("the other server got %d requests", len(evilAuth))
		}
	})
}
