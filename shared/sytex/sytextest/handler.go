package sytextest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	kind, id := route(r.URL.Path)

	s.mu.Lock()
	s.counts.Total++
	switch {
	case kind == routeCollection && r.Method == http.MethodGet:
		s.counts.Search++
	case kind == routeCollection && r.Method == http.MethodPost:
		s.counts.Create++
	case kind == routeItem && r.Method == http.MethodGet:
		s.counts.Get++
	case kind == routeItem && r.Method == http.MethodPatch:
		s.counts.Update++
	}
	latency := s.latency
	s.mu.Unlock()

	if !s.pause(r, latency) {
		return
	}
	s.mu.Lock()
	hang := s.hang
	s.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-r.Context().Done():
			return
		case <-s.closed:
			return
		}
	}

	s.mu.Lock()
	outage := s.outage
	fail := 0
	if !outage && s.failN > 0 {
		s.failN--
		fail = s.failStatus
	}
	failFn := s.failFn
	s.mu.Unlock()
	switch {
	case outage:
		writeFault(w, http.StatusServiceUnavailable)
		return
	case fail != 0:
		writeFault(w, fail)
		return
	}

	// Django resolves the URL before DRF authenticates, so unknown paths are
	// 404 even without a token.
	if kind == routeNone {
		writeHTML(w, http.StatusNotFound, "<h1>Not Found</h1><p>The requested resource was not found on this server.</p>")
		return
	}
	if !s.authorized(w, r) {
		return
	}

	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
	if err != nil {
		return // the client went away
	}
	if len(body) > maxRequestBody {
		writeHTML(w, http.StatusBadRequest, "<h1>Bad Request (400)</h1>")
		return
	}
	if failFn != nil {
		r2 := r.Clone(r.Context())
		r2.Body = io.NopCloser(bytes.NewReader(body))
		if status, b, ok := failFn(r2); ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, b)
			return
		}
	}

	switch {
	case kind == routeCollection && r.Method == http.MethodGet:
		s.list(w, r)
	case kind == routeCollection && r.Method == http.MethodPost:
		if fields, ok := parseBody(w, r, body); ok {
			s.create(w, fields)
		}
	case kind == routeItem && r.Method == http.MethodGet:
		s.get(w, id)
	case kind == routeItem && r.Method == http.MethodPatch:
		if fields, ok := parseBody(w, r, body); ok {
			s.patch(w, id, fields)
		}
	default:
		allow := "GET, POST, HEAD, OPTIONS"
		if kind == routeItem {
			allow = "GET, PATCH, HEAD, OPTIONS"
		}
		w.Header().Set("Allow", allow)
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"detail": fmt.Sprintf("Method %q not allowed.", r.Method)})
	}
}

// pause waits d; false if the client or the server went away meanwhile.
func (s *Server) pause(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	// Go timers fire late by up to a millisecond or so (the poller's
	// resolution, scheduling): 5% of a 20 ms latency. Aim early by the
	// recent average lateness, so the delay a client sees averages d.
	start := time.Now()
	late := time.Duration(s.lateness.Load())
	t := time.NewTimer(max(d-late, 0))
	defer t.Stop()
	select {
	case <-t.C:
		got := time.Since(start) - d // this pause's error
		s.lateness.Store(int64(late + (got)/8))
		return true
	case <-r.Context().Done():
		return false
	case <-s.closed:
		return false
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"detail":"A server error occurred."}`)
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Vary", "Accept")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeHTML(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, "<!doctype html>\n<html><head><title>"+strconv.Itoa(status)+"</title></head><body>"+body+"</body></html>\n")
}

// writeFault answers like the layer that would produce status: gateways
// answer 5xx with HTML, DRF answers 4xx with {"detail"}.
func writeFault(w http.ResponseWriter, status int) {
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	text := http.StatusText(status)
	switch {
	case status >= 500:
		writeHTML(w, status, "<center><h1>"+strconv.Itoa(status)+" "+text+"</h1></center>")
	case status == http.StatusTooManyRequests:
		writeJSON(w, status, map[string]string{"detail": "Request was throttled. Expected available in 1 second."})
	case status == http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", "Token")
		writeJSON(w, status, map[string]string{"detail": "Authentication credentials were not provided."})
	case status == http.StatusForbidden:
		writeJSON(w, status, map[string]string{"detail": "You do not have permission to perform this action."})
	case status == http.StatusNotFound:
		writeJSON(w, status, map[string]string{"detail": "Not found."})
	default:
		if text == "" {
			text = "Error"
		}
		writeJSON(w, status, map[string]string{"detail": text + "."})
	}
}

// ---- serialization ----

type neTypeJSON struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

type coordJSON struct {
	ID        int64  `json:"id"`
	Name      string `json:"name"`
	Latitude  string `json:"latitude"`
	Longitude string `json:"longitude"`
}

type elementJSON struct {
	ID           int64       `json:"id"`
	Name         string      `json:"name"`
	Code         string      `json:"code"`
	Description  string      `json:"description"`
	NEType       *neTypeJSON `json:"ne_type"`
	Coords       []coordJSON `json:"networkelementcoordinates_set"`
	Organization int64       `json:"organization"`
}

// serialize renders e as DRF would: ne_type as a nested object, decimals as
// strings with 6 decimal places.
func (s *Server) serialize(e *stored) elementJSON {
	out := elementJSON{ID: e.ID, Name: e.Name, Code: e.Code, Coords: []coordJSON{}, Organization: s.org}
	if e.NEType != 0 {
		out.NEType = &neTypeJSON{ID: e.NEType, Name: "Type " + strconv.FormatInt(e.NEType, 10)}
	}
	if e.HasCoords {
		out.Coords = append(out.Coords, coordJSON{
			ID:        e.coordID,
			Name:      "Coordinates",
			Latitude:  strconv.FormatFloat(e.Latitude, 'f', 6, 64),
			Longitude: strconv.FormatFloat(e.Longitude, 'f', 6, 64),
		})
	}
	return out
}

func round6(f float64) float64 { return math.Round(f*1e6) / 1e6 }

// ---- list ----

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	params := r.URL.Query()
	limit, ok := positiveInt(params.Get("limit"))
	s.mu.Lock()
	defPage, maxPage := s.defPage, s.maxPage
	s.mu.Unlock()
	if !ok || limit == 0 {
		limit = defPage // DRF LimitOffsetPagination falls back to the default
	}
	limit = min(limit, maxPage)
	offset, ok := positiveInt(params.Get("offset"))
	if !ok {
		offset = 0
	}

	var idIn, neTypes map[int64]bool
	errs := map[string][]string{}
	if v := params.Get("id__in"); v != "" {
		if idIn = intSet(v); idIn == nil {
			errs["id__in"] = []string{"Enter a whole number."}
		}
	}
	if v := params.Get("ne_type"); v != "" {
		if neTypes = intSet(v); neTypes == nil {
			errs["ne_type"] = []string{"Select a valid choice. That choice is not one of the available choices."}
		}
	}
	if len(errs) > 0 {
		writeJSON(w, http.StatusBadRequest, errs)
		return
	}
	q := strings.ToLower(strings.ReplaceAll(params.Get("q"), "\x00", ""))
	codeContains := strings.ToLower(params.Get("code__icontains"))
	codeStarts := strings.ToLower(params.Get("code__istartswith"))

	s.mu.Lock()
	var matches []elementJSON
	var keys []*stored
	consider := func(e *stored) {
		name, code := s.index.lower(e)
		switch {
		case q != "" && !strings.Contains(name, q) && !strings.Contains(code, q):
		case codeContains != "" && !strings.Contains(code, codeContains):
		case codeStarts != "" && !strings.HasPrefix(code, codeStarts):
		case idIn != nil && !idIn[e.ID]:
		case neTypes != nil && !neTypes[e.NEType]:
		default:
			keys = append(keys, e)
		}
	}
	if ids, ok := s.index.candidates(q); ok {
		for id := range ids {
			if e, ok := s.elems[id]; ok {
				consider(e)
			}
		}
	} else {
		for _, e := range s.elems {
			consider(e)
		}
	}
	sortElements(keys, params.Get("ordering"))
	count := len(keys)
	lo, hi := min(offset, count), min(offset+limit, count)
	for _, e := range keys[lo:hi] {
		matches = append(matches, s.serialize(e))
	}
	s.mu.Unlock()
	if matches == nil {
		matches = []elementJSON{}
	}

	var next, prev *string
	if offset+limit < count {
		u := pageURL(r, limit, offset+limit)
		next = &u
	}
	if offset > 0 {
		u := pageURL(r, limit, max(offset-limit, 0))
		prev = &u
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": count, "next": next, "previous": prev, "results": matches})
}

// pageURL builds an absolute link from the request's own Host, as DRF's
// request.build_absolute_uri does; offset 0 is dropped from "previous".
func pageURL(r *http.Request, limit, offset int) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	q := r.URL.Query()
	q.Set("limit", strconv.Itoa(limit))
	if offset > 0 {
		q.Set("offset", strconv.Itoa(offset))
	} else {
		q.Del("offset")
	}
	u := url.URL{Scheme: scheme, Host: r.Host, Path: r.URL.Path, RawQuery: q.Encode()}
	return u.String()
}

// sortElements applies DRF OrderingFilter: comma-separated fields among id,
// name and code, "-" for descending; unknown fields are ignored; ties and the
// default order by id.
func sortElements(es []*stored, ordering string) {
	type key struct {
		field string
		desc  bool
	}
	var keys []key
	for _, f := range strings.Split(ordering, ",") {
		f = strings.TrimSpace(f)
		desc := strings.HasPrefix(f, "-")
		f = strings.TrimPrefix(f, "-")
		if f == "id" || f == "name" || f == "code" {
			keys = append(keys, key{f, desc})
		}
	}
	keys = append(keys, key{"id", false})
	sort.SliceStable(es, func(i, j int) bool {
		a, b := es[i], es[j]
		for _, k := range keys {
			var c int
			switch k.field {
			case "id":
				c = cmpInt(a.ID, b.ID)
			case "name":
				c = strings.Compare(a.Name, b.Name)
			case "code":
				c = strings.Compare(a.Code, b.Code)
			}
			if k.desc {
				c = -c
			}
			if c != 0 {
				return c < 0
			}
		}
		return false
	})
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func positiveInt(s string) (int, bool) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, n > 0 || s == "0"
}

// intSet parses "1,2,3"; nil if any item is not an integer.
func intSet(v string) map[int64]bool {
	set := map[int64]bool{}
	for _, p := range strings.Split(v, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(p), 10, 64)
		if err != nil {
			return nil
		}
		set[n] = true
	}
	return set
}

// ---- item ----

func (s *Server) get(w http.ResponseWriter, id int64) {
	s.mu.Lock()
	e, ok := s.elems[id]
	var out elementJSON
	if ok {
		out = s.serialize(e)
	}
	s.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not found."})
		return
	}
	writeJSON(w, http.StatusOK, out)
}
