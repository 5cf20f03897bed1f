package sytex

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// FindByName returns the network elements whose name equals name byte for
// byte, sorted by ID. Sytex's q is a substring search over name and code, so
// the pages are walked to the end (following "next", at most MaxPages pages)
// and near-misses ("CTO-10" for "CTO-1") are dropped here. More than one
// result means duplicates exist in Sytex.
//
// A "next" link is followed only if it has the scheme and host of BaseURL,
// so the token is never sent elsewhere.
func (c *Client) FindByName(ctx context.Context, name string) ([]Element, error) {
	if err := checkText("name", name); err != nil {
		return nil, err
	}
	u := c.collectionURL()
	q := url.Values{}
	q.Set("q", name)
	q.Set("limit", strconv.Itoa(c.pageSize))
	q.Set("offset", "0")
	u.RawQuery = q.Encode()

	var out []Element
	seen := map[int64]bool{}     // offset pages can overlap when rows move
	visited := map[string]bool{} // a "next" that points back is a loop
	for page := 1; ; page++ {
		if page > MaxPages {
			return nil, &ResponseError{Status: http.StatusOK, Method: http.MethodGet, Path: u.Path,
				Reason: "search for one name spans more than " + strconv.Itoa(MaxPages) + " pages"}
		}
		visited[u.String()] = true
		rep, err := c.do(ctx, http.MethodGet, RouteCollection, u, nil, http.StatusOK)
		if err != nil {
			return nil, err
		}
		elems, next, err := decodePage(rep.body)
		if err != nil {
			return nil, c.unusable(http.MethodGet, u.Path, rep, err)
		}
		for _, e := range elems {
			if e.Name == name && !seen[e.ID] {
				seen[e.ID] = true
				out = append(out, e)
			}
		}
		if next == "" {
			break
		}
		nu, reason := c.nextURL(u, next)
		if reason == "" && visited[nu.String()] {
			reason = `"next" link points to a page already read`
		}
		if reason != "" {
			return nil, c.responseError(http.StatusOK, http.MethodGet, u.Path, reason, nil)
		}
		u = nu
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// nextURL resolves a DRF "next" link and checks it stays on BaseURL's scheme
// and host. It returns a reason when the link must not be followed.
func (c *Client) nextURL(cur *url.URL, next string) (*url.URL, string) {
	ref, err := url.Parse(next)
	if err != nil {
		return nil, `"next" link is not a URL`
	}
	nu := cur.ResolveReference(ref)
	nu.Fragment = ""
	if nu.User != nil {
		return nil, `"next" link carries credentials`
	}
	if !strings.EqualFold(nu.Scheme, c.base.Scheme) || !sameHost(nu, &c.base) {
		return nil, `"next" link leaves BaseURL (scheme or host differs); not followed`
	}
	return nu, ""
}

func sameHost(a, b *url.URL) bool {
	port := func(u *url.URL) string {
		if p := u.Port(); p != "" {
			return p
		}
		if strings.EqualFold(u.Scheme, "https") {
			return "443"
		}
		return "80"
	}
	return strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
}

// CreateRequest is a new network element. All fields are required; the
// coordinates are sent as the "Coordinates" entry.
type CreateRequest struct {
	Name                string
	Code                string
	NETypeID            int64
	Latitude, Longitude float64
}

type wireCoordsOut struct {
	Name      string      `json:"name"`
	Latitude  json.Number `json:"latitude"`
	Longitude json.Number `json:"longitude"`
}

type createBody struct {
	Name   string          `json:"name"`
	Code   string          `json:"code"`
	NEType int64           `json:"ne_type"`
	Coords []wireCoordsOut `json:"networkelementcoordinates_set"`
}

// Create posts a new network element and returns it as stored by Sytex.
// Sytex has no idempotency key: a create whose answer is lost may have
// happened, so search again before retrying.
//
// Inputs that cannot round-trip are refused with ErrInvalidInput: a name with
// leading or trailing whitespace would be trimmed by DRF and then never match
// exactly again, creating a duplicate on every sync.
func (c *Client) Create(ctx context.Context, r CreateRequest) (Element, error) {
	if err := checkText("name", r.Name); err != nil {
		return Element{}, err
	}
	if strings.TrimSpace(r.Name) != r.Name {
		return Element{}, invalid("name has leading or trailing whitespace, which Sytex would trim")
	}
	if err := checkText("code", r.Code); err != nil {
		return Element{}, err
	}
	if r.NETypeID <= 0 {
		return Element{}, invalid("ne_type id must be > 0, got %d", r.NETypeID)
	}
	co, err := coordsOut(Coordinates{r.Latitude, r.Longitude})
	if err != nil {
		return Element{}, err
	}
	payload, err := json.Marshal(createBody{Name: r.Name, Code: r.Code, NEType: r.NETypeID, Coords: co})
	if err != nil {
		return Element{}, invalid("%v", err)
	}
	u := c.collectionURL()
	rep, err := c.do(ctx, http.MethodPost, RouteCollection, u, payload, http.StatusCreated, http.StatusOK)
	if err != nil {
		return Element{}, err
	}
	e, err := decodeOne(rep.body)
	if err != nil {
		return Element{}, c.unusable(http.MethodPost, u.Path, rep, err)
	}
	return e, nil
}

// Patch lists the fields to change; nil fields are not sent.
type Patch struct {
	NETypeID    *int64
	Coordinates *Coordinates
}

// Update patches network element id with the set fields of p and returns the
// element as stored. An empty patch sends nothing and returns a zero Element
// and nil.
func (c *Client) Update(ctx context.Context, id int64, p Patch) (Element, error) {
	if p.NETypeID == nil && p.Coordinates == nil {
		return Element{}, nil
	}
	if id <= 0 {
		return Element{}, invalid("element id must be > 0, got %d", id)
	}
	body := map[string]any{}
	if p.NETypeID != nil {
		if *p.NETypeID <= 0 {
			return Element{}, invalid("ne_type id must be > 0, got %d", *p.NETypeID)
		}
		body["ne_type"] = *p.NETypeID
	}
	if p.Coordinates != nil {
		co, err := coordsOut(*p.Coordinates)
		if err != nil {
			return Element{}, err
		}
		body["networkelementcoordinates_set"] = co
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return Element{}, invalid("%v", err)
	}
	u := c.itemURL(id)
	rep, err := c.do(ctx, http.MethodPatch, RouteItem, u, payload, http.StatusOK)
	if err != nil {
		return Element{}, err
	}
	e, err := decodeOne(rep.body)
	if err != nil {
		return Element{}, c.unusable(http.MethodPatch, u.Path, rep, err)
	}
	return e, nil
}

// checkText refuses text that cannot survive the trip: empty, invalid UTF-8
// (replaced by U+FFFD on the way, so an exact match would never succeed
// again) or NUL (refused by DRF and PostgreSQL).
func checkText(field, s string) error {
	switch {
	case strings.TrimSpace(s) == "":
		return invalid("%s is empty", field)
	case !utf8.ValidString(s):
		return invalid("%s is not valid UTF-8", field)
	case strings.ContainsRune(s, 0):
		return invalid("%s contains a NUL character", field)
	}
	return nil
}

// coordsOut validates a point and renders it with at most 6 decimal places:
// a DRF DecimalField with decimal_places=6 answers 400 to more, and Sytex
// stores no more anyway (shared/reference/sytex-api.md).
func coordsOut(p Coordinates) ([]wireCoordsOut, error) {
	if math.IsNaN(p.Latitude) || math.IsInf(p.Latitude, 0) || p.Latitude < -90 || p.Latitude > 90 {
		return nil, invalid("latitude %v is not in [-90, 90]", p.Latitude)
	}
	if math.IsNaN(p.Longitude) || math.IsInf(p.Longitude, 0) || p.Longitude < -180 || p.Longitude > 180 {
		return nil, invalid("longitude %v is not in [-180, 180]", p.Longitude)
	}
	return []wireCoordsOut{{
		Name:      CoordinatesName,
		Latitude:  decimal6(p.Latitude),
		Longitude: decimal6(p.Longitude),
	}}, nil
}

func decimal6(f float64) json.Number {
	s := strconv.FormatFloat(f, 'f', 6, 64)
	s = strings.TrimRight(s, "0")
	s = strings.TrimSuffix(s, ".")
	if s == "-0" {
		s = "0"
	}
	return json.Number(s)
}
