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
	"strconv"
	"strings"
)

const (
	boxesPath    = "/api/v2/boxes"
	boxTypesPath = "/api/v2/box-types"

	// implantedFilter asks the server for implanted boxes only. It goes in
	// the query string, as older SDKs and real-world clients send it.
	implantedFilter = `[{"property":"implanted","operator":"=","value":true}]`
)

// page is the list envelope shared by every OZmap list route:
// {"total","count","start","limit","rows","hasNextPage","nextUrl"}.
// hasNextPage/nextUrl were added in 2025 and may be absent.
type page struct {
	rows        []json.RawMessage
	total       int64 // -1 when absent or not a number
	hasNextPage *bool
	nextURL     string
}

// Boxes streams every box matching implanted==true, page by page, holding
// one page in memory at a time.
//
// It follows hasNextPage when the server sends it and otherwise asks for
// the next page until one comes back empty; it never assumes the server
// honoured the requested limit. A row that cannot be decoded is yielded as
// a Row with Err and Raw set, and paging continues. The error value is
// non-nil only for a fatal error (after retries), and iteration ends there.
// Box.Implanted must still be checked by the caller: the server filter is
// not trusted.
func (c *Client) Boxes(ctx context.Context) iter.Seq2[Row, error] {
	return func(yield func(Row, error) bool) {
		for rows, err := range c.pages(ctx, boxesPath, implantedFilter) {
			if err != nil {
				yield(Row{}, err)
				return
			}
			for _, raw := range rows {
				b, err := decodeBox(raw)
				r := Row{Box: b}
				if err != nil {
					r = Row{Err: err, Raw: c.rawForRow(raw)}
				}
				if !yield(r, nil) {
					return
				}
			}
		}
	}
}

// BoxTypes loads all box types (GET /api/v2/box-types) and returns
// id -> code. Rows without a usable id are skipped and logged; a box type
// without a code maps to "".
func (c *Client) BoxTypes(ctx context.Context) (map[string]string, error) {
	types := make(map[string]string)
	for rows, err := range c.pages(ctx, boxTypesPath, "") {
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
// fatal error.
func (c *Client) pages(ctx context.Context, path, filter string) iter.Seq2[[]json.RawMessage, error] {
	return func(yield func([]json.RawMessage, error) bool) {
		firstIDs := make(map[string]int) // a page's first row -> page number
		maxPages := int64(-1)
		var rowsPerPage int64
		next := c.pageURL(path, filter, 1)
		for n := 1; ; n++ {
			op := fmt.Sprintf("GET %s page %d", path, n)
			if maxPages >= 0 && int64(n) > maxPages {
				yield(nil, c.opErr(op, 1, fmt.Errorf("%w: more than %d pages for %d rows", ErrPagingLoop, maxPages, rowsPerPage)))
				return
			}
			p, err := c.getPage(ctx, next, op)
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

// getPage fetches and parses one page. A truncated body is transient (it is
// retried); a body that is not JSON at all is a permanent error naming what
// came back.
func (c *Client) getPage(ctx context.Context, u *url.URL, op string) (page, error) {
	var p page
	err := c.get(ctx, u, op, func(body []byte, ctype string) error {
		var err error
		p, err = parsePage(body, ctype)
		return err
	})
	return p, err
}

func parsePage(body []byte, ctype string) (page, error) {
	p := page{total: -1}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return p, fmt.Errorf("%w: Content-Type %q, body starts with %q", ErrNotJSON, ctype, truncateUTF8(string(trimmed), 64))
	}
	var env map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if err := dec.Decode(&env); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return p, fmt.Errorf("page body is truncated (%d bytes): %w", len(body), io.ErrUnexpectedEOF)
		}
		return p, fmt.Errorf("%w: Content-Type %q: %v", ErrNotJSON, ctype, err)
	}
	rows, ok := env["rows"]
	if !ok {
		return p, fmt.Errorf("%w: page has no \"rows\" (Content-Type %q, body starts with %q)", ErrNotJSON, ctype, truncateUTF8(string(trimmed), 64))
	}
	switch jsonKind(rows) {
	case "null":
	case "array":
		if err := json.Unmarshal(rows, &p.rows); err != nil {
			return p, fmt.Errorf("%w: \"rows\": %v", ErrNotJSON, err)
		}
	default:
		return p, fmt.Errorf("%w: \"rows\" is a %s, want array", ErrNotJSON, jsonKind(rows))
	}
	// Envelope fields are advisory; a wrong type reads as "absent", which
	// falls back to paging until an empty page.
	if v, ok := env["total"]; ok && jsonKind(v) == "number" {
		if t, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64); err == nil && t >= 0 {
			p.total = t
		}
	}
	if v, ok := env["hasNextPage"]; ok && jsonKind(v) == "boolean" {
		b := bytes.Equal(bytes.TrimSpace(v), []byte("true"))
		p.hasNextPage = &b
	}
	if v, ok := env["nextUrl"]; ok && jsonKind(v) == "string" {
		_ = json.Unmarshal(v, &p.nextURL)
	}
	return p, nil
}
