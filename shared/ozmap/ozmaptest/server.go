// Package ozmaptest is an in-memory OZmap API v2 simulator for tests, demos
// and benchmarks, in the spirit of net/http/httptest. It serves
// GET /api/v2/boxes and GET /api/v2/box-types with OZmap's paging envelope
// and filter syntax (see shared/reference/ozmap-api.md), keeps its state in
// memory for inspection, and can inject faults: failing requests, latency,
// outages and hostile rows.
package ozmaptest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// DefaultMaxPageSize is the server's cap on limit.
	DefaultMaxPageSize = 1000
	// DefaultLimit is the page size when the request has no limit.
	DefaultLimit = 25
)

// Box is a box as OZmap stores and sends it (docs/BOX.md of ozmap-sdk).
// On the wire, rows always carry both coords [lng, lat] and top-level
// lat/lng: coords wins when set, else it is built from Lat/Lng.
type Box struct {
	ID             string    `json:"id"`
	Kind           string    `json:"kind"`
	Name           string    `json:"name"`
	Coords         []float64 `json:"coords"` // [lng, lat], GeoJSON order
	Lat            float64   `json:"lat"`
	Lng            float64   `json:"lng"`
	Implanted      bool      `json:"implanted"`
	Draft          bool      `json:"draft"`
	Certified      bool      `json:"certified"`
	BoxType        any       `json:"boxType"` // nil, id string, or a populated object
	HierarchyLevel int       `json:"hierarchyLevel"`
	Project        string    `json:"project"`
	Pole           string    `json:"pole"`
	Tags           []string  `json:"tags"`
	Cables         []string  `json:"cables"`
	Observation    string    `json:"observation"`
	CreatedAt      time.Time `json:"createdAt"`
	UpdatedAt      time.Time `json:"updatedAt"`
}

// BoxType is a box type as OZmap sends it. It has no name: its label is Code.
type BoxType struct {
	ID           string `json:"id"`
	Code         string `json:"code"`
	Brand        string `json:"brand"`
	Mold         string `json:"mold"`
	Prefix       string `json:"prefix"`
	Description  string `json:"description"`
	DefaultLevel int    `json:"default_level"`
}

// wire returns b as it is serialized in a listing.
func (b Box) wire() Box {
	if len(b.Coords) >= 2 {
		b.Lng, b.Lat = b.Coords[0], b.Coords[1]
	} else {
		b.Coords = []float64{b.Lng, b.Lat}
	}
	if b.Tags == nil {
		b.Tags = []string{}
	}
	if b.Cables == nil {
		b.Cables = []string{}
	}
	return b
}

func (b Box) clone() Box {
	b.Coords = slices.Clone(b.Coords)
	b.Tags = slices.Clone(b.Tags)
	b.Cables = slices.Clone(b.Cables)
	return b
}

// Server is a running simulator. Its methods are safe for concurrent use.
type Server struct {
	URL string // base URL, e.g. http://127.0.0.1:41234

	srv      *httptest.Server
	apiKey   string
	requests atomic.Int64

	mu           sync.Mutex
	boxes        map[string]Box
	types        map[string]BoxType
	rawRows      []json.RawMessage
	maxPage      int
	noNextPage   bool
	ignoreFilter bool
	latency      time.Duration
	failStatus   int
	failN        int
	outage       bool
	filters      []string // filter parameters of box listings, in order
	// listing caches the sorted, filtered boxes of the last filter asked
	// for, so paging through a million boxes does not filter and sort them
	// all again for every page. Any change to the boxes drops it.
	listing       []Box
	listingFilter string
	listingValid  bool
}

// Option configures a Server at creation.
type Option func(*Server)

// WithMaxPageSize caps limit at n (default 1000), as a real server may.
func WithMaxPageSize(n int) Option { return func(s *Server) { s.maxPage = max(n, 1) } }

// WithoutNextPage omits hasNextPage and nextUrl, like servers before 2025,
// so clients must page until an empty page.
func WithoutNextPage() Option { return func(s *Server) { s.noNextPage = true } }

// WithIgnoreFilter validates but does not apply the filter parameter, so a
// client can prove it re-checks rows itself.
func WithIgnoreFilter() Option { return func(s *Server) { s.ignoreFilter = true } }

// WithLatency delays every answer by d.
func WithLatency(d time.Duration) Option { return func(s *Server) { s.latency = d } }

// NewServer starts a simulator on a random 127.0.0.1 port accepting apiKey.
// Call Close when done.
func NewServer(apiKey string, opts ...Option) *Server {
	s := &Server{
		apiKey:  apiKey,
		boxes:   make(map[string]Box),
		types:   make(map[string]BoxType),
		maxPage: DefaultMaxPageSize,
	}
	for _, o := range opts {
		o(s)
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = s.srv.URL
	return s
}

// Close shuts the server down, blocking until outstanding requests end.
func (s *Server) Close() { s.srv.Close() }

// NewID returns a random 24-hex-digit ObjectId-like id.
func NewID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// PutBox inserts b or replaces the box with the same ID. An empty ID gets
// NewID, an empty Kind "Box", and zero timestamps the current time.
func (s *Server) PutBox(b Box) {
	s.PutBoxes([]Box{b})
}

// PutBoxes is PutBox for many boxes under one lock.
func (s *Server) PutBoxes(bs []Box) {
	now := time.Now().UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range bs {
		b = b.clone()
		if b.ID == "" {
			b.ID = NewID()
		}
		if b.Kind == "" {
			b.Kind = "Box"
		}
		if b.CreatedAt.IsZero() {
			b.CreatedAt = now
		}
		if b.UpdatedAt.IsZero() {
			b.UpdatedAt = now
		}
		s.boxes[b.ID] = b
	}
	s.dropListing()
}

// dropListing forgets the cached listing; call with s.mu held.
func (s *Server) dropListing() {
	s.listing, s.listingFilter, s.listingValid = nil, "", false
}

// PutBoxType inserts t or replaces the type with the same ID (NewID when empty).
func (s *Server) PutBoxType(t BoxType) {
	if t.ID == "" {
		t.ID = NewID()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.types[t.ID] = t
}

// DeleteBox removes the box with this id, if any.
func (s *Server) DeleteBox(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.boxes, id)
	s.dropListing()
}

// Boxes returns a copy of the stored boxes, sorted by id.
func (s *Server) Boxes() []Box {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Box, 0, len(s.boxes))
	for _, b := range s.boxes {
		out = append(out, b.clone())
	}
	slices.SortFunc(out, func(a, b Box) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// BoxTypes returns a copy of the stored box types, sorted by id.
func (s *Server) BoxTypes() []BoxType {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]BoxType, 0, len(s.types))
	for _, t := range s.types {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b BoxType) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Requests returns the number of requests received, on every route,
// including rejected and fault-injected ones.
func (s *Server) Requests() int64 { return s.requests.Load() }

// maxFilterLog bounds what Filters remembers.
const maxFilterLog = 1000

// Filters returns the filter parameter of the accepted box listings (the
// last 1000), in the order received ("" for a listing without one).
func (s *Server) Filters() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.filters)
}

// FailNext makes the next n requests answer status with a small JSON body,
// plus "Retry-After: 1" for 429 and 503.
func (s *Server) FailNext(status, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failStatus, s.failN = status, n
}

// SetLatency delays every later answer by d.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// SetOutage makes every request answer 503 (without Retry-After) while on.
func (s *Server) SetOutage(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outage = on
}

// SetRawRows replaces the raw rows appended, unfiltered, after the boxes of
// every box listing (for hostile-row tests). They count in total and are
// paged like the other rows.
func (s *Server) SetRawRows(rows []json.RawMessage) {
	cp := make([]json.RawMessage, len(rows))
	for i, r := range rows {
		cp[i] = slices.Clone(r)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rawRows = cp
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeMessage(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, map[string]string{"message": fmt.Sprintf(format, args...)})
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)

	s.mu.Lock()
	latency, outage := s.latency, s.outage
	failStatus := 0
	if s.failN > 0 {
		s.failN--
		failStatus = s.failStatus
	}
	s.mu.Unlock()

	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	// Faults come first, as from a proxy in front of the API.
	if outage {
		writeMessage(w, http.StatusServiceUnavailable, "Service Unavailable")
		return
	}
	if failStatus != 0 {
		if failStatus == http.StatusTooManyRequests || failStatus == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		writeMessage(w, failStatus, "%s (injected)", http.StatusText(failStatus))
		return
	}
	if !s.authorized(r.Header.Get("Authorization")) {
		writeMessage(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	var list func(http.ResponseWriter, *http.Request, listQuery)
	switch r.URL.Path {
	case "/api/v2/boxes":
		list = s.listBoxes
	case "/api/v2/box-types":
		list = s.listBoxTypes
	default:
		writeMessage(w, http.StatusNotFound, "Cannot %s %s", r.Method, r.URL.Path)
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeMessage(w, http.StatusMethodNotAllowed, "Method Not Allowed")
		return
	}
	q, err := parseListQuery(r.URL.Query(), s.maxPage)
	if err != nil {
		writeMessage(w, http.StatusBadRequest, "%v", err)
		return
	}
	list(w, r, q)
}

// authorized accepts the raw key (what the SDK sends) and "Bearer <key>".
func (s *Server) authorized(h string) bool {
	if s.apiKey == "" || h == "" {
		return false
	}
	h = strings.TrimPrefix(h, "Bearer ")
	return subtle.ConstantTimeCompare([]byte(h), []byte(s.apiKey)) == 1
}

type listQuery struct {
	page, limit int
	filterRaw   string
	filter      []condition
}

func parseListQuery(v url.Values, maxPage int) (listQuery, error) {
	q := listQuery{page: 1, limit: DefaultLimit, filterRaw: v.Get("filter")}
	if p := v.Get("page"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 {
			return q, fmt.Errorf("page must be a positive integer, got %q", p)
		}
		q.page = n
	}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			return q, fmt.Errorf("limit must be a positive integer, got %q", l)
		}
		q.limit = n
	}
	q.limit = min(q.limit, maxPage)
	if q.filterRaw != "" {
		if err := json.Unmarshal([]byte(q.filterRaw), &q.filter); err != nil {
			return q, fmt.Errorf("filter must be a JSON array of {property, operator, value}: %v", err)
		}
	}
	return q, nil
}

// envelope is the list answer shared by every OZmap list route.
type envelope struct {
	Total       int               `json:"total"`
	Count       int               `json:"count"`
	Start       int               `json:"start"`
	Limit       int               `json:"limit"`
	Rows        []json.RawMessage `json:"rows"`
	HasNextPage *bool             `json:"hasNextPage,omitempty"`
	NextURL     json.RawMessage   `json:"nextUrl,omitempty"` // a string, or null on the last page
}

// respond pages n rows (row(i) renders the i-th) for q.
func (s *Server) respond(w http.ResponseWriter, r *http.Request, q listQuery, n int, row func(i int) json.RawMessage) {
	start := n
	if q.page-1 <= n/q.limit { // also avoids overflow on absurd page numbers
		start = min((q.page-1)*q.limit, n)
	}
	end := min(start+q.limit, n)
	env := envelope{Total: n, Count: end - start, Start: start, Limit: q.limit, Rows: make([]json.RawMessage, 0, end-start)}
	for i := start; i < end; i++ {
		env.Rows = append(env.Rows, row(i))
	}
	if !s.noNextPage {
		more := end < n
		env.HasNextPage = &more
		if more {
			v := url.Values{}
			v.Set("page", strconv.Itoa(q.page+1))
			v.Set("limit", strconv.Itoa(q.limit))
			if q.filterRaw != "" {
				v.Set("filter", q.filterRaw)
			}
			env.NextURL, _ = json.Marshal(r.URL.Path + "?" + v.Encode())
		} else {
			env.NextURL = json.RawMessage("null")
		}
	}
	writePage(w, env)
}

// writePage writes a page envelope as encoding/json would, without
// re-validating and compacting every row (json.Encoder does that for each
// RawMessage): the rows are already compact JSON, and at a million boxes the
// simulator must not cost more than the client it serves.
func writePage(w http.ResponseWriter, env envelope) {
	size := 128 + len(env.NextURL)
	for _, r := range env.Rows {
		size += len(r) + 1
	}
	b := make([]byte, 0, size)
	b = append(b, `{"total":`...)
	b = strconv.AppendInt(b, int64(env.Total), 10)
	b = append(b, `,"count":`...)
	b = strconv.AppendInt(b, int64(env.Count), 10)
	b = append(b, `,"start":`...)
	b = strconv.AppendInt(b, int64(env.Start), 10)
	b = append(b, `,"limit":`...)
	b = strconv.AppendInt(b, int64(env.Limit), 10)
	b = append(b, `,"rows":[`...)
	for i, r := range env.Rows {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, r...)
	}
	b = append(b, ']')
	if env.HasNextPage != nil {
		b = append(b, `,"hasNextPage":`...)
		b = strconv.AppendBool(b, *env.HasNextPage)
	}
	if len(env.NextURL) > 0 {
		b = append(b, `,"nextUrl":`...)
		b = append(b, env.NextURL...)
	}
	b = append(b, "}\n"...)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

func (s *Server) listBoxes(w http.ResponseWriter, r *http.Request, q listQuery) {
	match, err := compile(q.filter, boxFields)
	if err != nil {
		writeMessage(w, http.StatusBadRequest, "%v", err)
		return
	}
	s.mu.Lock()
	if len(s.filters) >= maxFilterLog {
		s.filters = slices.Delete(s.filters, 0, len(s.filters)-maxFilterLog+1)
	}
	s.filters = append(s.filters, q.filterRaw)
	rows := s.listing
	if !s.listingValid || s.listingFilter != q.filterRaw {
		rows = nil
		for _, b := range s.boxes {
			if s.ignoreFilter || match(boxFieldValue(b)) {
				rows = append(rows, b)
			}
		}
		slices.SortFunc(rows, func(a, b Box) int { return strings.Compare(a.ID, b.ID) })
		// Shared read-only by the requests that use it: a change to the
		// boxes drops the cache, it never modifies it.
		s.listing, s.listingFilter, s.listingValid = rows, q.filterRaw, true
	}
	raw := s.rawRows
	s.mu.Unlock()

	s.respond(w, r, q, len(rows)+len(raw), func(i int) json.RawMessage {
		if i >= len(rows) {
			return raw[i-len(rows)]
		}
		b, _ := json.Marshal(rows[i].wire())
		return b
	})
}

func (s *Server) listBoxTypes(w http.ResponseWriter, r *http.Request, q listQuery) {
	match, err := compile(q.filter, boxTypeFields)
	if err != nil {
		writeMessage(w, http.StatusBadRequest, "%v", err)
		return
	}
	s.mu.Lock()
	var rows []BoxType
	for _, t := range s.types {
		if s.ignoreFilter || match(boxTypeFieldValue(t)) {
			rows = append(rows, t)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(rows, func(a, b BoxType) int { return strings.Compare(a.ID, b.ID) })
	s.respond(w, r, q, len(rows), func(i int) json.RawMessage {
		b, _ := json.Marshal(rows[i])
		return b
	})
}
