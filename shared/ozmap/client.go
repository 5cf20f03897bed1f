// Package ozmap is a client for OZmap's REST API v2 (boxes and box types).
//
// The protocol facts it relies on (raw-key Authorization header, page/limit
// paging, the {total,count,start,limit,rows,hasNextPage,nextUrl} envelope,
// coords in GeoJSON [lng, lat] order) come from OZmap's TypeScript SDK; see
// shared/reference/ozmap-api.md. Servers are treated as hostile: bodies are
// capped, rows are decoded one by one, and the API key never appears in an
// error or a log line.
package ozmap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/httpx"
)

// Defaults for the zero values of Options.
const (
	DefaultPageSize       = 500
	DefaultMaxAttempts    = 6
	DefaultRetryBaseDelay = 500 * time.Millisecond
	// DefaultMaxBodyBytes is the smallest default body cap; with a large
	// PageSize the default grows to PageSize × DefaultMaxBytesPerRow.
	DefaultMaxBodyBytes = 32 << 20
	// DefaultMaxBytesPerRow scales the default body cap with PageSize.
	DefaultMaxBytesPerRow = 8 << 10
	DefaultMaxRetryAfter  = 5 * time.Minute
	DefaultTimeout        = 30 * time.Second
	// MaxProjectIDsPerQuery is how many project ids one listing's "in"
	// filter carries; more are split over several listings, which keeps
	// the query string far below the usual 8 KiB URL limits.
	MaxProjectIDsPerQuery = 100

	maxBackoff     = 30 * time.Second
	errorBodyLimit = 512
	maxRedirects   = 5
	userAgent      = "ozmap-sytex-sync"
)

// Route templates reported to Options.OnRequest (low cardinality, safe as a
// metric label: never a query string, never the key).
const (
	RouteBoxes    = boxesPath
	RouteBoxTypes = boxTypesPath
)

// Options configures a Client. Zero values select the documented defaults.
type Options struct {
	// BaseURL is scheme+host+port, e.g. https://client.ozmap.com.br:9994.
	// Routes live under /api/v2/.
	BaseURL string
	// APIKey is sent as "Authorization: <key>" (raw, no Bearer), as the SDK does.
	APIKey string
	// PageSize is the number of rows asked per page (limit). Default 500.
	// The server may send fewer; the client never relies on getting it.
	PageSize int
	// HTTPClient defaults to &http.Client{Timeout: 30s}. The client is
	// copied and its CheckRedirect replaced (see New): a redirect is
	// followed only to the same host and port over the same scheme, or from
	// http to https on the same host name, so the API key never reaches
	// another server or travels in clear text after an https URL.
	HTTPClient *http.Client
	// MaxAttempts is the number of attempts per request for transient
	// failures (429, 5xx, timeouts, connection errors, truncated bodies).
	// Default 6.
	MaxAttempts int
	// RetryBaseDelay is the first backoff. Default 500ms. Backoff is
	// exponential with full jitter, capped at 30s. A Retry-After header on
	// 429/503 (seconds or HTTP date) is honoured instead, up to MaxRetryAfter.
	RetryBaseDelay time.Duration
	// MaxRetryAfter caps how long a server's Retry-After can make the client
	// wait. Default 5 minutes.
	MaxRetryAfter time.Duration
	// MaxBodyBytes caps any response body read. Default: the larger of
	// 32 MiB and PageSize × 8 KiB (80 MiB for 10000 rows a page). A larger
	// body is an error (ErrBodyTooLarge), never a silent truncation, and is
	// not read past the cap.
	MaxBodyBytes int64
	// Logger, when set, receives one Warn record per retry. The API key is
	// never logged.
	Logger *slog.Logger
	// ProjectIDs, when not empty, limits Boxes to the boxes of these OZmap
	// projects (24-hex-digit ids; New refuses anything else). The server is
	// asked with a "project in [...]" filter and every row is checked again
	// here: a row of another project is dropped, never yielded. Empty means
	// every project the key's user can see.
	ProjectIDs []string
	// OnRequest, if set, is called once per HTTP attempt with the method,
	// the route template (RouteBoxes or RouteBoxTypes, never a query string
	// or the key), the status (0 when no answer arrived: connection error,
	// timeout, refused TLS) and the time taken including the body read. It
	// must be safe for concurrent use.
	OnRequest func(method, route string, status int, d time.Duration)
	// OnBoxPage, if set, is called after each page of boxes is read, with
	// the number of rows it held and the server's "total" of matching rows
	// (-1 when the server did not send one). With more than
	// MaxProjectIDsPerQuery project ids, Boxes runs several queries, each
	// with its own total, reported on its first page (page 1).
	OnBoxPage func(page, rows int, total int64)
}

// Client talks to one OZmap server. It is safe for concurrent use.
type Client struct {
	base          *url.URL
	key           string
	pageSize      int
	hc            *http.Client
	maxAttempts   int
	baseDelay     time.Duration
	maxRetryAfter time.Duration
	maxBody       int64
	log           *slog.Logger
	projects      []string            // normalized Options.ProjectIDs
	projectSet    map[string]struct{} // the same, for the client-side check
	onRequest     func(method, route string, status int, d time.Duration)
	onBoxPage     func(page, rows int, total int64)
}

// New validates o and returns a Client. BaseURL must be an absolute http or
// https URL; APIKey must not be empty.
func New(o Options) (*Client, error) {
	if strings.TrimSpace(o.APIKey) == "" {
		return nil, errors.New("ozmap: APIKey is empty")
	}
	if strings.ContainsAny(o.APIKey, "\r\n") {
		return nil, errors.New("ozmap: APIKey contains a line break")
	}
	u, err := url.Parse(strings.TrimSpace(o.BaseURL))
	if err != nil {
		// url.Parse errors quote the input; the base URL is not secret.
		return nil, fmt.Errorf("ozmap: invalid BaseURL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("ozmap: BaseURL %q must be an absolute http(s) URL such as https://client.ozmap.com.br:9994", o.BaseURL)
	}
	if u.User != nil {
		return nil, errors.New("ozmap: BaseURL must not contain credentials; use APIKey")
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	u.RawQuery = ""
	u.Fragment = ""
	projects, err := normalizeProjectIDs(o.ProjectIDs)
	if err != nil {
		return nil, err
	}

	c := &Client{
		base:          u,
		key:           o.APIKey,
		pageSize:      o.PageSize,
		hc:            o.HTTPClient,
		maxAttempts:   o.MaxAttempts,
		baseDelay:     o.RetryBaseDelay,
		maxRetryAfter: o.MaxRetryAfter,
		maxBody:       o.MaxBodyBytes,
		log:           o.Logger,
		projects:      projects,
		onRequest:     o.OnRequest,
		onBoxPage:     o.OnBoxPage,
	}
	if len(projects) > 0 {
		c.projectSet = make(map[string]struct{}, len(projects))
		for _, p := range projects {
			c.projectSet[p] = struct{}{}
		}
	}
	if c.pageSize <= 0 {
		c.pageSize = DefaultPageSize
	}
	var hc http.Client
	if c.hc != nil {
		hc = *c.hc
	} else {
		hc = http.Client{Timeout: DefaultTimeout}
	}
	hc.CheckRedirect = c.checkRedirect
	c.hc = &hc
	if c.maxAttempts <= 0 {
		c.maxAttempts = DefaultMaxAttempts
	}
	if c.baseDelay <= 0 {
		c.baseDelay = DefaultRetryBaseDelay
	}
	if c.maxRetryAfter <= 0 {
		c.maxRetryAfter = DefaultMaxRetryAfter
	}
	if c.maxBody <= 0 {
		c.maxBody = max(DefaultMaxBodyBytes, int64(c.pageSize)*DefaultMaxBytesPerRow)
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// redact removes the API key from s. The key is only ever sent in a header,
// but a hostile or misconfigured server may echo it back in a body or a URL.
func (c *Client) redact(s string) string {
	if c.key == "" {
		return s
	}
	return strings.ReplaceAll(s, c.key, "[REDACTED]")
}

// snippet renders the start of server-supplied bytes for an error message:
// the key removed (also a piece of it cut by the limit), at most n bytes,
// never split inside a rune.
func (c *Client) snippet(b []byte, n int) string {
	cut := len(b) > n
	if cut {
		// Keep enough to see a key that starts before byte n whole.
		b = b[:min(len(b), n+len(c.key))]
	}
	s := c.redact(strings.ToValidUTF8(string(b), "\uFFFD"))
	if cut {
		s = trimKeyPrefix(s, c.key)
	}
	if len(s) > n {
		s = truncateUTF8(s, n) + "…"
	}
	return s
}

// trimKeyPrefix drops the end of s when it is the beginning of key: a body
// cut by a read limit in the middle of an echoed key must not show even part
// of it.
func trimKeyPrefix(s, key string) string {
	for k := min(len(key)-1, len(s)); k > 0; k-- {
		if strings.HasSuffix(s, key[:k]) {
			return s[:len(s)-k]
		}
	}
	return s
}

// checkRedirect is the HTTP client's redirect policy: follow a redirect only
// to BaseURL's host name, on its scheme and port or upgraded from http to
// https, at most maxRedirects times. Go itself forwards the Authorization
// header (the key) to any port of the same host name, to its subdomains and
// from https down to http; this policy keeps the key on BaseURL. A refused
// redirect comes back as the 3xx answer, a permanent *APIError naming where
// it pointed.
func (c *Client) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects || !c.sameOrigin(req.URL, true) {
		return http.ErrUseLastResponse
	}
	return nil
}

// sameOrigin reports whether u is on BaseURL's host name and port with its
// scheme, or (with upgrade) on its host name over https when BaseURL is http.
func (c *Client) sameOrigin(u *url.URL, upgrade bool) bool {
	if u.User != nil || !strings.EqualFold(u.Hostname(), c.base.Hostname()) {
		return false
	}
	if strings.EqualFold(u.Scheme, c.base.Scheme) && port(u) == port(c.base) {
		return true
	}
	return upgrade && c.base.Scheme == "http" && strings.EqualFold(u.Scheme, "https")
}

func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

// get performs one GET with retries, handing each 2xx body to parse. A
// transient error from the request or from parse (a truncated or non-JSON
// body) is retried with backoff; anything else ends the call. route is the
// path template reported to OnRequest; op names the request in errors, e.g.
// "GET /api/v2/boxes page 3".
func (c *Client) get(ctx context.Context, u *url.URL, route, op string, parse func(body []byte, contentType string) error) error {
	for attempt := 1; ; attempt++ {
		body, ctype, err := c.getOnce(ctx, u, route)
		if err == nil {
			err = parse(body, ctype)
			if err == nil {
				return nil
			}
		}
		if ctx.Err() != nil {
			return c.opErr(op, attempt, fmt.Errorf("%w (last error: %v)", context.Cause(ctx), err))
		}
		if !IsTransient(err) || attempt >= c.maxAttempts {
			return c.opErr(op, attempt, err)
		}
		d := c.backoff(attempt, err)
		c.log.Warn("ozmap: request failed, retrying",
			"op", op, "attempt", attempt, "max_attempts", c.maxAttempts,
			"delay", d, "err", c.redact(err.Error()))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return c.opErr(op, attempt, fmt.Errorf("%w (last error: %v)", context.Cause(ctx), err))
		case <-t.C:
		}
	}
}

// backoff returns the wait before attempt+1: the server's Retry-After when
// it sent one (bounded), otherwise exponential backoff with full jitter.
func (c *Client) backoff(attempt int, err error) time.Duration {
	var ae *APIError
	if errors.As(err, &ae) && ae.RetryAfter > 0 {
		return min(ae.RetryAfter, c.maxRetryAfter)
	}
	ceil := c.baseDelay
	for i := 1; i < attempt && ceil < maxBackoff; i++ {
		ceil *= 2
	}
	ceil = min(ceil, maxBackoff)
	return rand.N(ceil) + 1
}

func (c *Client) observe(route string, status int, start time.Time) {
	if c.onRequest != nil {
		c.onRequest(http.MethodGet, route, status, time.Since(start))
	}
}

func (c *Client) getOnce(ctx context.Context, u *url.URL, route string) ([]byte, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Authorization", c.key)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.observe(route, 0, start)
		return nil, "", err
	}
	defer resp.Body.Close()
	ctype := resp.Header.Get("Content-Type")

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit+1))
		// Drain a little more so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		c.observe(route, resp.StatusCode, start)
		ae := &APIError{
			Status: resp.StatusCode,
			Method: http.MethodGet,
			Path:   u.Path,
			Body:   strings.TrimSpace(c.snippet(b, errorBodyLimit)),
		}
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			ae.Body = c.redirectNote(resp)
		}
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			ae.RetryAfter = httpx.RetryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
		return nil, ctype, ae
	}

	b, err := c.readBody(resp)
	c.observe(route, resp.StatusCode, start)
	if err != nil {
		return nil, ctype, err
	}
	return b, ctype, nil
}

// readBody reads a 2xx body up to MaxBodyBytes. A body announced or found
// larger is not read further (closing it drops the connection): memory stays
// bounded whatever the server sends.
func (c *Client) readBody(resp *http.Response) ([]byte, error) {
	if resp.ContentLength > c.maxBody {
		return nil, &causeError{cause: ErrBodyTooLarge, msg: fmt.Sprintf(
			"response body of %d bytes exceeds the %d-byte limit (MaxBodyBytes); not read — a smaller OZMAP_PAGE_SIZE makes smaller pages",
			resp.ContentLength, c.maxBody)}
	}
	var buf bytes.Buffer
	if resp.ContentLength > 0 {
		buf.Grow(int(resp.ContentLength) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, c.maxBody+1)); err != nil {
		// A body cut short by the network: transient.
		return nil, fmt.Errorf("reading response body: %w", err)
	}
	if int64(buf.Len()) > c.maxBody {
		return nil, &causeError{cause: ErrBodyTooLarge, msg: fmt.Sprintf(
			"response body exceeds the %d-byte limit (MaxBodyBytes); stopped reading there — a smaller OZMAP_PAGE_SIZE makes smaller pages",
			c.maxBody)}
	}
	return buf.Bytes(), nil
}

// redirectNote describes a redirect that was not followed, without its query
// (it may carry anything) and without the key.
func (c *Client) redirectNote(resp *http.Response) string {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "redirect without a Location; not followed"
	}
	target := "an unparsable Location"
	if ref, err := url.Parse(loc); err == nil {
		t := resp.Request.URL.ResolveReference(ref)
		if c.sameOrigin(t, true) {
			return fmt.Sprintf("more than %d redirects; not followed", maxRedirects)
		}
		t.User, t.RawQuery, t.ForceQuery, t.Fragment = nil, "", false, ""
		target = strconv.Quote(c.snippet([]byte(t.String()), 200))
	}
	return fmt.Sprintf("redirect to %s not followed: it leaves %s://%s, and the API key is only sent there (set OZMAP_URL to the address that answers)",
		target, c.base.Scheme, c.base.Host)
}

// causeError has its own message and matches a sentinel with errors.Is.
type causeError struct {
	msg   string
	cause error
}

func (e *causeError) Error() string { return e.msg }
func (e *causeError) Unwrap() error { return e.cause }

// truncateUTF8 cuts s to at most n bytes without splitting a rune.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
