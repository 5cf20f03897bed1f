package ozmap

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

const (
	boxesPath    = "/api/v2/boxes"
	boxTypesPath = "/api/v2/box-types"
)

// condition is one element of OZmap's filter parameter. Conditions are ANDed.
type condition struct {
	Property string `json:"property"`
	Operator string `json:"operator"`
	Value    any    `json:"value"`
}

// implanted asks the server for implanted boxes only.
var implanted = condition{Property: "implanted", Operator: "=", Value: true}

// boxFilters returns the filter parameter of each listing Boxes makes, in the
// query string as older SDKs and real-world clients send it:
// [{"property":"implanted","operator":"=","value":true}], plus
// {"property":"project","operator":"in","value":[...]} when ProjectIDs is
// set, one listing per MaxProjectIDsPerQuery ids.
func (c *Client) boxFilters() []string {
	enc := func(conds ...condition) string {
		b, _ := json.Marshal(conds) // only strings and bools: cannot fail
		return string(b)
	}
	if len(c.projects) == 0 {
		return []string{enc(implanted)}
	}
	var out []string
	for ids := range slices.Chunk(c.projects, MaxProjectIDsPerQuery) {
		out = append(out, enc(implanted, condition{Property: "project", Operator: "in", Value: ids}))
	}
	return out
}

// projectIDRe is an OZmap (MongoDB ObjectId) id.
var projectIDRe = regexp.MustCompile(`^[0-9a-f]{24}$`)

// normalizeProjectIDs trims, lower-cases (OZmap ids are lower-case hex; the
// server compares them as strings) and deduplicates ids, refusing anything
// that is not 24 hex digits.
func normalizeProjectIDs(in []string) ([]string, error) {
	var out []string
	seen := make(map[string]bool, len(in))
	for i, raw := range in {
		p := strings.ToLower(strings.TrimSpace(raw))
		if !projectIDRe.MatchString(p) {
			return nil, &causeError{cause: ErrInvalidProjectID, msg: fmt.Sprintf(
				"ozmap: ProjectIDs[%d] %q is not an OZmap project id (24 hexadecimal digits, e.g. 5d9f3ff9200141000647f814)",
				i, truncateUTF8(raw, 64))}
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

// inProjects reports whether a row belongs to the configured projects (always
// true without ProjectIDs). The server filter is not trusted alone.
func (c *Client) inProjects(projectID string) bool {
	if c.projectSet == nil {
		return true
	}
	_, ok := c.projectSet[strings.ToLower(projectID)]
	return ok
}

// page is the list envelope shared by every OZmap list route:
// {"total","count","start","limit","rows","hasNextPage","nextUrl"}.
// hasNextPage/nextUrl were added in 2025 and may be absent.
type page struct {
	rows        []json.RawMessage
	total       int64 // -1 when absent or not a number
	hasNextPage *bool
	nextURL     string
}

// Boxes streams every box matching implanted==true (and, with
// Options.ProjectIDs, belonging to one of those projects), page by page.
// It reads one page ahead: while the caller consumes page n, page n+1 is
// fetched and decoded in another goroutine, so at most two pages are in
// memory (and at most one request is made that an early stop wastes).
//
// It follows hasNextPage when the server sends it and otherwise asks for
// the next page until one comes back empty; it never assumes the server
// honoured the requested limit. A row that cannot be decoded is yielded as
// a Row with Err and Raw set, and paging continues. The error value is
// non-nil only for a fatal error (after retries), and iteration ends there.
// Box.Implanted must still be checked by the caller: the server filter is
// not trusted. The project filter is re-checked here: a row of another
// project (or, with ProjectIDs, of no project) is dropped and counted in one
// Warn log record.
func (c *Client) Boxes(ctx context.Context) iter.Seq2[Row, error] {
	return func(yield func(Row, error) bool) {
		dropped := 0
		defer func() {
			if dropped > 0 {
				c.log.Warn("ozmap: dropped rows outside OZMAP_PROJECT_IDS that the server sent despite the filter", "rows", dropped)
			}
		}()
		filters := c.boxFilters()
		for i, filter := range filters {
			label := ""
			if len(filters) > 1 {
				label = fmt.Sprintf(" (project ids %d-%d)", i*MaxProjectIDsPerQuery+1, min((i+1)*MaxProjectIDsPerQuery, len(c.projects)))
			}
			decoded := func(ctx context.Context) iter.Seq2[[]pageRow, error] {
				return func(yield func([]pageRow, error) bool) {
					for rows, err := range c.pages(ctx, boxesPath, label, filter) {
						if err != nil {
							yield(nil, err)
							return
						}
						if !yield(c.decodeRows(rows), nil) {
							return
						}
					}
				}
			}
			for rows, err := range ahead(ctx, decoded) {
				if err != nil {
					yield(Row{}, err)
					return
				}
				for i := range rows {
					if rows[i].dropped {
						dropped++
						continue
					}
					if !yield(rows[i].Row, nil) {
						return
					}
				}
			}
		}
	}
}

// pageRow is a decoded row, or one dropped for being outside ProjectIDs.
type pageRow struct {
	Row
	dropped bool
}

// decodeRows decodes the rows of one page of boxes.
func (c *Client) decodeRows(rows []json.RawMessage) []pageRow {
	out := make([]pageRow, len(rows))
	for i, raw := range rows {
		b, err := decodeBox(raw)
		r := &out[i]
		if err != nil {
			if p, ok := rowProject(raw); ok && !c.inProjects(p) {
				r.dropped = true
				continue
			}
			r.Row = Row{Err: err, Raw: c.rawForRow(raw)}
		} else if !c.inProjects(b.ProjectID) {
			r.dropped = true
		} else {
			r.Box = b
		}
	}
	return out
}

// ahead runs seq in a goroutine one element ahead of the caller: while the
// caller handles element n, seq produces element n+1 and waits until the
// caller asks for it. When the caller stops early, seq's context is
// cancelled (an HTTP request in flight is abandoned) and ahead returns only
// once the goroutine has ended. An error seq yields (a cancelled ctx
// included) reaches the caller like any element.
func ahead[T any](ctx context.Context, seq func(context.Context) iter.Seq2[T, error]) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		type item struct {
			v   T
			err error
		}
		ctx, cancel := context.WithCancel(ctx)
		items := make(chan item)    // unbuffered: at most one element waits in the send
		stop := make(chan struct{}) // the caller reads no more
		done := make(chan struct{}) // the goroutine has ended
		go func() {
			defer close(done)
			defer close(items)
			for v, err := range seq(ctx) {
				select {
				case items <- item{v, err}:
				case <-stop:
					return
				}
			}
		}()
		defer func() {
			close(stop)
			cancel()
			<-done
		}()
		for it := range items {
			if !yield(it.v, it.err) {
				return
			}
		}
	}
}

// rowProject reads the project id of a row that failed to decode, so a bad
// row of a project outside ProjectIDs is dropped rather than reported.
func rowProject(raw json.RawMessage) (string, bool) {
	var o object
	if jsonKind(raw) != "object" || json.Unmarshal(raw, &o) != nil {
		return "", false
	}
	id, err := o.ref("project")
	return id, err == nil && id != ""
}

// BoxTypes loads all box types (GET /api/v2/box-types) and returns
// id -> code. Rows without a usable id are skipped and logged; a box type
// without a code maps to "".
func (c *Client) BoxTypes(ctx context.Context) (map[string]string, error) {
	types := make(map[string]string)
	for rows, err := range c.pages(ctx, boxTypesPath, "", "") {
		if err != nil {
			return nil, err
		}
		for _, raw := range rows {
			id, code, err := decodeBoxType(raw)
			if err != nil {
				c.log.Warn("ozmap: skipping undecodable box type", "err", err.Error(), "raw", string(c.rawForRow(raw)))
				continue
			}
			types[id] = code
		}
	}
	return types, nil
}

func decodeBoxType(raw json.RawMessage) (id, code string, err error) {
	if k := jsonKind(raw); k != "object" {
		return "", "", &RowError{Reason: "want object, got " + k}
	}
	var o object
	if err := json.Unmarshal(raw, &o); err != nil {
		return "", "", &RowError{Reason: "invalid JSON object"}
	}
	if id, err = o.id(""); err != nil {
		return "", "", err
	}
	if code, _, err = o.str("code"); err != nil {
		return "", "", err
	}
	return id, code, nil
}

// pages yields the rows of each page of a list route until the end, or one
// fatal error. label is added to the operation's name in errors.
func (c *Client) pages(ctx context.Context, path, label, filter string) iter.Seq2[[]json.RawMessage, error] {
	return func(yield func([]json.RawMessage, error) bool) {
		firstIDs := make(map[string]int) // a page's first row -> page number
		maxPages := int64(-1)
		var rowsPerPage int64
		next := c.pageURL(path, filter, 1)
		for n := 1; ; n++ {
			op := fmt.Sprintf("GET %s%s page %d", path, label, n)
			if maxPages >= 0 && int64(n) > maxPages {
				yield(nil, c.opErr(op, 1, fmt.Errorf("%w: more than %d pages for %d rows", ErrPagingLoop, maxPages, rowsPerPage)))
				return
			}
			p, err := c.getPage(ctx, next, path, op)
			if err != nil {
				yield(nil, err)
				return
			}
			if len(p.rows) == 0 {
				return
			}
			key := rowKey(p.rows[0])
			if prev, seen := firstIDs[key]; seen {
				yield(nil, c.opErr(op, 1, fmt.Errorf("%w: page %d starts with the same row as page %d (%s)", ErrPagingLoop, n, prev, truncateUTF8(key, 64))))
				return
			}
			firstIDs[key] = n
			// Guard: total/limit*2+10 pages, with limit being what the
			// server actually sent on page 1 (it may cap our PageSize).
			if n == 1 {
				rowsPerPage = int64(len(p.rows))
			}
			if p.total >= 0 && rowsPerPage > 0 {
				if m := p.total/rowsPerPage*2 + 10; m > maxPages {
					maxPages = m
				}
			}
			if path == boxesPath && c.onBoxPage != nil {
				c.onBoxPage(n, len(p.rows), p.total)
			}
			if !yield(p.rows, nil) {
				return
			}
			if p.hasNextPage != nil && !*p.hasNextPage {
				return
			}
			next = c.pageURL(path, filter, n+1)
			if p.hasNextPage != nil && p.nextURL != "" {
				if u, ok := c.sameHost(p.nextURL); ok {
					next = u
				} else {
					c.log.Warn("ozmap: ignoring nextUrl that points away from BaseURL; using page numbers", "op", op)
				}
			}
		}
	}
}

// rowKey identifies a row for loop detection: its id, or its raw bytes.
func rowKey(raw json.RawMessage) string {
	var o object
	if json.Unmarshal(raw, &o) == nil {
		if id, err := o.id(""); err == nil {
			return id
		}
	}
	return string(bytes.TrimSpace(raw))
}

func (c *Client) pageURL(path, filter string, n int) *url.URL {
	u := *c.base
	u.Path = c.base.Path + path
	q := url.Values{}
	q.Set("page", strconv.Itoa(n))
	q.Set("limit", strconv.Itoa(c.pageSize))
	if filter != "" {
		q.Set("filter", filter)
	}
	u.RawQuery = q.Encode()
	return &u
}

// sameHost resolves nextUrl (relative or absolute) against BaseURL and
// accepts it only on the same scheme and host, so the key is never sent
// anywhere else.
func (c *Client) sameHost(next string) (*url.URL, bool) {
	ref, err := url.Parse(next)
	if err != nil {
		return nil, false
	}
	u := c.base.ResolveReference(ref)
	if u.Scheme != c.base.Scheme || !strings.EqualFold(u.Host, c.base.Host) || u.User != nil {
		return nil, false
	}
	u.Fragment = ""
	return u, true
}

// getPage fetches and parses one page. A truncated body or one that is not
// JSON at all is transient (it is retried); JSON of the wrong shape is a
// permanent error naming what came back (see ErrNotJSON).
func (c *Client) getPage(ctx context.Context, u *url.URL, route, op string) (page, error) {
	var p page
	err := c.get(ctx, u, route, op, func(body []byte, ctype string) error {
		var err error
		p, err = c.parsePage(body, ctype)
		return err
	})
	return p, err
}

// wireEnvelope decodes a page: encoding/json checks the body and finds the
// envelope's members, the rows array is split in one more pass (scanArray),
// and the rows alias the body.
type wireEnvelope struct {
	Rows        wireRows        `json:"rows"`
	Total       json.RawMessage `json:"total"`
	HasNextPage json.RawMessage `json:"hasNextPage"`
	NextURL     json.RawMessage `json:"nextUrl"`
}

type wireRows struct {
	present bool
	kind    string
	rows    []json.RawMessage
}

func (r *wireRows) UnmarshalJSON(b []byte) error {
	r.present, r.kind = true, jsonKind(b)
	if r.kind != "array" {
		return nil
	}
	// One pass, no copy: the rows alias the body, which is this page's own
	// buffer (readBody) and is not reused.
	rows, err := scanArray(b, make([]json.RawMessage, 0, len(r.rows)))
	if err != nil {
		return err
	}
	r.rows = rows
	return nil
}

// notJSON is a 2xx body that is not JSON at all (transient).
func (c *Client) notJSON(body []byte, ctype, why string) error {
	return &causeError{cause: ErrNotJSON, msg: fmt.Sprintf("response is not JSON%s (status 2xx, Content-Type %q, %d bytes, body starts %q)",
		why, c.snippet([]byte(ctype), 64), len(body), c.snippet(bytes.TrimSpace(body), 64))}
}

// badShape is a 2xx body that is JSON but not an OZmap page (permanent).
func (c *Client) badShape(body []byte, ctype, why string) error {
	return &causeError{cause: errors.Join(ErrNotJSON, errShape), msg: fmt.Sprintf("response is JSON but not an OZmap page: %s (Content-Type %q, body starts %q)",
		why, c.snippet([]byte(ctype), 64), c.snippet(bytes.TrimSpace(body), 64))}
}

func (c *Client) parsePage(body []byte, ctype string) (page, error) {
	p := page{total: -1}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return p, c.notJSON(body, ctype, ": the body is empty")
	}
	if trimmed[0] != '{' {
		if json.Valid(trimmed) {
			return p, c.badShape(body, ctype, "want an object, got "+jsonKind(trimmed))
		}
		return p, c.notJSON(body, ctype, "")
	}
	if p, ok := fastPage(trimmed); ok {
		return p, nil
	}
	// Not valid JSON: encoding/json says what is wrong with it.
	var env wireEnvelope
	if err := json.Unmarshal(trimmed, &env); err != nil {
		var (
			te *json.UnmarshalTypeError
			se *json.SyntaxError
		)
		switch {
		// A syntax error at the very end is a body cut short.
		case errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &se) && se.Offset >= int64(len(trimmed)):
			return p, fmt.Errorf("page body is truncated (%d bytes): %w", len(body), io.ErrUnexpectedEOF)
		case errors.As(err, &te):
			return p, c.badShape(body, ctype, err.Error())
		}
		return p, c.notJSON(body, ctype, ": "+err.Error())
	}
	switch {
	case !env.Rows.present:
		return p, c.badShape(body, ctype, `no "rows"`)
	case env.Rows.kind == "null":
	case env.Rows.kind != "array":
		return p, c.badShape(body, ctype, fmt.Sprintf(`"rows" is a %s, want an array`, env.Rows.kind))
	}
	p.rows = env.Rows.rows
	p.envelope(env.Total, env.HasNextPage, env.NextURL)
	return p, nil
}

// envelopeKeys are the members of a page parsePage reads.
var envelopeKeys = []string{"rows", "total", "hasNextPage", "nextUrl"}

// fastPage parses a page body in one pass (scanObject), exactly as
// json.Unmarshal into wireEnvelope would: member names matched as struct
// fields are (case-insensitively), the last of a repeated member counting,
// and a null "rows" after an array keeping that array's rows (the
// Unmarshaler ignores null). The rows alias body. ok is false when body is
// not valid JSON or not a usable page; parsePage then lets encoding/json
// produce the error.
func fastPage(body []byte) (p page, ok bool) {
	var vals, arrays [4]json.RawMessage
	f := fieldSet{keys: envelopeKeys, vals: vals[:], fold: true, arrays: arrays[:]}
	if scanObject(body, &f) != nil {
		return page{}, false
	}
	p = page{total: -1}
	switch jsonKind(vals[0]) {
	case "array", "null":
		if arrays[0] != nil {
			rows, err := scanArray(arrays[0], nil)
			if err != nil {
				return page{}, false
			}
			p.rows = rows
		}
	default: // absent or not an array: an error parsePage reports
		return page{}, false
	}
	p.envelope(vals[1], vals[2], vals[3])
	return p, true
}

// envelope reads the advisory members of a page; a wrong type reads as
// "absent", which falls back to paging until an empty page.
func (p *page) envelope(total, hasNextPage, nextURL json.RawMessage) {
	if v := total; jsonKind(v) == "number" {
		if t, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64); err == nil && t >= 0 {
			p.total = t
		}
	}
	if v := hasNextPage; jsonKind(v) == "boolean" {
		b := bytes.Equal(bytes.TrimSpace(v), []byte("true"))
		p.hasNextPage = &b
	}
	if v := nextURL; jsonKind(v) == "string" {
		p.nextURL, _ = unquote(v)
	}
}
