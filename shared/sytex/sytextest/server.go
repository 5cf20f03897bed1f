// Package sytextest is an in-memory simulator of the Sytex network element
// API (shared/reference/sytex-api.md), served over HTTP on a loopback port
// like net/http/httptest. Tests, demos and benchmarks use it to run the real
// client against something that behaves like Django REST Framework, inspect
// the resulting state and inject faults.
package sytextest

import (
	"crypto/subtle"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Server is a running simulator. Its methods are safe for concurrent use.
type Server struct {
	// URL is the base URL, e.g. http://127.0.0.1:40123 (no trailing slash).
	URL string

	srv       *httptest.Server
	token     string
	org       int64
	closed    chan struct{}
	closeOnce sync.Once

	mu          sync.Mutex
	elems       map[int64]*stored
	nextID      int64
	nextCoordID int64
	neTypes     map[int64]bool
	defPage     int
	maxPage     int
	latency     time.Duration
	lateness    atomic.Int64 // average timer lateness of pauses, ns (see pause)
	failStatus  int
	failN       int
	failFn      func(r *http.Request) (status int, body string, ok bool)
	outage      bool
	hang        chan struct{} // non-nil while hanging; closed to release
	counts      Counts
	index       nameIndex // finds search candidates without a full scan
}

type stored struct {
	Element
	coordID int64
}

// Option configures a Server at creation.
type Option func(*Server)

// WithDefaultPageSize sets the page size used when a search gives no valid
// limit (default 20).
func WithDefaultPageSize(n int) Option {
	return func(s *Server) {
		if n > 0 {
			s.defPage = n
		}
	}
}

// WithMaxPageSize caps the limit a search may ask for (default 100).
func WithMaxPageSize(n int) Option {
	return func(s *Server) {
		if n > 0 {
			s.maxPage = n
		}
	}
}

// WithNETypes sets the valid ne_type ids (default 321, 322, 323).
func WithNETypes(ids ...int64) Option {
	return func(s *Server) {
		s.neTypes = map[int64]bool{}
		for _, id := range ids {
			s.neTypes[id] = true
		}
	}
}

// WithLatency delays every answer by d.
func WithLatency(d time.Duration) Option {
	return func(s *Server) { s.latency = d }
}

// NewServer starts a simulator on 127.0.0.1 that accepts only
// "Authorization: Token <token>" and "Organization: <orgID>". Call Close
// when done.
func NewServer(token string, orgID int64, opts ...Option) *Server {
	s := &Server{
		token:       token,
		org:         orgID,
		closed:      make(chan struct{}),
		elems:       map[int64]*stored{},
		nextID:      1,
		nextCoordID: 1,
		neTypes:     map[int64]bool{321: true, 322: true, 323: true},
		defPage:     20,
		maxPage:     100,
	}
	for _, o := range opts {
		o(s)
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = s.srv.URL
	return s
}

// Close releases any hanging or delayed request and shuts the server down.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closed) })
	s.srv.Close()
}

// Element is a network element as the simulator stores it. Coordinates are
// kept rounded to 6 decimal places, as Sytex does.
type Element struct {
	ID                  int64
	Name                string
	Code                string
	NEType              int64 // 0: none
	Latitude, Longitude float64
	HasCoords           bool
}

// Seed stores e as is (no validation, so tests can plant hostile data) under
// e.ID, or the next free id if e.ID is 0, replacing any element with that id.
// It returns the stored element.
func (s *Server) Seed(e Element) Element {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.ID == 0 {
		e.ID = s.nextID
	}
	if e.ID >= s.nextID {
		s.nextID = e.ID + 1
	}
	st := &stored{Element: e}
	if e.HasCoords {
		st.Latitude, st.Longitude = round6(e.Latitude), round6(e.Longitude)
		st.coordID = s.nextCoordID
		s.nextCoordID++
	} else {
		st.Latitude, st.Longitude = 0, 0
	}
	s.elems[e.ID] = st
	s.index.put(st)
	return st.Element
}

// Elements returns a copy of every element, sorted by id.
func (s *Server) Elements() []Element {
	return s.filter(func(*stored) bool { return true })
}

// ElementsByName returns the elements whose name equals name exactly.
func (s *Server) ElementsByName(name string) []Element {
	return s.filter(func(e *stored) bool { return e.Name == name })
}

// Element returns the element with the given id.
func (s *Server) Element(id int64) (Element, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.elems[id]
	if !ok {
		return Element{}, false
	}
	return e.Element, true
}

func (s *Server) filter(keep func(*stored) bool) []Element {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []Element{}
	for _, e := range s.elems {
		if keep(e) {
			out = append(out, e.Element)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Counts are the requests received since start or the last ResetCounts,
// including those answered with a fault, 401/403 or 4xx. Total counts every
// request; the others count by route: Search (GET list), Create (POST list),
// Get (GET item), Update (PATCH item).
type Counts struct {
	Total, Search, Create, Update, Get int64
}

// Counts returns the request counters.
func (s *Server) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts
}

// ResetCounts zeroes the request counters.
func (s *Server) ResetCounts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts = Counts{}
}

// FailNext makes the next n requests (any route, before authentication)
// answer status, as a proxy or the application would: 5xx with an HTML page,
// 429 with DRF's throttling message; 429 and 503 carry "Retry-After: 1".
func (s *Server) FailNext(status int, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failStatus, s.failN = status, n
}

// FailMatching installs a rule consulted for every authenticated request to
// a known route: when fn returns ok, the request is answered with status and
// body (JSON) instead. fn may read r.Body; the handler still sees the whole
// body. fn must not block. nil removes the rule.
func (s *Server) FailMatching(fn func(r *http.Request) (status int, body string, ok bool)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failFn = fn
}

// SetLatency delays every later answer by d (on average: the simulator
// corrects for its timers firing late).
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// SetOutage makes every request answer 503 (HTML, Retry-After: 1) while on.
func (s *Server) SetOutage(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outage = on
}

// SetHang makes requests block without answering while on, until the client
// gives up (its request context ends), hang is turned off (they then proceed
// normally) or the server is closed.
func (s *Server) SetHang(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case on && s.hang == nil:
		s.hang = make(chan struct{})
	case !on && s.hang != nil:
		close(s.hang)
		s.hang = nil
	}
}

const (
	collectionPath = "/api/networkelement/"
	// maxRequestBody mirrors Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB).
	maxRequestBody = 2621440
)

type routeKind int

const (
	routeNone routeKind = iota
	routeCollection
	routeItem
)

// route maps a path to a route. DRF paths end with "/"; without it (or with
// a non-numeric id) the answer is Django's HTML 404.
func route(path string) (routeKind, int64) {
	if path == collectionPath {
		return routeCollection, 0
	}
	rest, ok := strings.CutPrefix(path, collectionPath)
	if !ok {
		return routeNone, 0
	}
	digits, ok := strings.CutSuffix(rest, "/")
	if !ok || digits == "" || strings.Trim(digits, "0123456789") != "" {
		return routeNone, 0
	}
	id, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return routeNone, 0
	}
	return routeItem, id
}

func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	// DRF TokenAuthentication messages (rest_framework/authentication.py).
	fields := strings.Fields(r.Header.Get("Authorization"))
	unauthorized := func(detail string) bool {
		w.Header().Set("WWW-Authenticate", "Token")
		writeJSON(w, http.StatusUnauthorized, map[string]string{"detail": detail})
		return false
	}
	switch {
	case len(fields) == 0 || !strings.EqualFold(fields[0], "Token"):
		return unauthorized("Authentication credentials were not provided.")
	case len(fields) == 1:
		return unauthorized("Invalid token header. No credentials provided.")
	case len(fields) > 2:
		return unauthorized("Invalid token header. Token string should not contain spaces.")
	case subtle.ConstantTimeCompare([]byte(fields[1]), []byte(s.token)) != 1:
		return unauthorized("Invalid token.")
	}
	org, err := strconv.ParseInt(strings.TrimSpace(r.Header.Get("Organization")), 10, 64)
	if err != nil || org != s.org {
		writeJSON(w, http.StatusForbidden, map[string]string{"detail": "You do not have permission to perform this action."})
		return false
	}
	return true
}
