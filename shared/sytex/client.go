// Package sytex is a client for the Sytex REST API, limited to what the
// OZmap → Sytex sync needs: find network elements by exact name, create them
// and patch them. Errors are classified where they arise (IsPermanent,
// IsAuth) so callers can switch on the class instead of parsing messages.
//
// The wire contract is shared/reference/sytex-api.md; the in-memory simulator
// lives in the sytextest subpackage.
package sytex

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Defaults and limits applied by New and FindByName.
const (
	DefaultPageSize           = 50
	DefaultMaxBodyBytes int64 = 8 << 20
	DefaultTimeout            = 20 * time.Second
	// MaxPages bounds how many pages FindByName follows for one name.
	MaxPages = 200
	// UserAgent is sent on every request.
	UserAgent = "ozmap-sytex-sync"
)

// Route templates reported to Options.OnRequest (low cardinality, safe as a
// metric label).
const (
	RouteCollection = "/api/networkelement/"
	RouteItem       = "/api/networkelement/{id}/"
)

// Options configure a Client. Zero values of the optional fields select the
// documented defaults.
type Options struct {
	// BaseURL is the instance root, e.g. https://app.sytex.io (http or https,
	// no query, no credentials). A path prefix is kept.
	BaseURL string
	// Token is sent as "Authorization: Token <token>". It never appears in
	// errors or in the output of fmt on Options or Client.
	Token string
	// OrganizationID is sent as the "Organization" header; must be > 0.
	OrganizationID int64
	// HTTPClient defaults to &http.Client{Timeout: 20s}. The client is copied
	// and redirects are disabled on the copy (see New).
	HTTPClient *http.Client
	// PageSize is the limit for searches; default 50.
	PageSize int
	// MaxBodyBytes caps response bodies; default 8 MiB. A 2xx body larger
	// than this is a *ResponseError.
	MaxBodyBytes int64
	// OnRequest, if set, is called after every HTTP exchange with the route
	// template (RouteCollection or RouteItem), the status (0 on a transport
	// error) and the elapsed time. It must be safe for concurrent use.
	OnRequest func(method, route string, status int, d time.Duration)
}

// String redacts the token so Options can be logged.
func (o Options) String() string {
	return fmt.Sprintf("sytex.Options{BaseURL:%q Token:%s OrganizationID:%d PageSize:%d MaxBodyBytes:%d}",
		o.BaseURL, redactedMark(o.Token), o.OrganizationID, o.PageSize, o.MaxBodyBytes)
}

// GoString redacts the token for %#v.
func (o Options) GoString() string { return o.String() }

func redactedMark(token string) string {
	if token == "" {
		return `""`
	}
	return "[REDACTED]"
}

// Client talks to one Sytex instance and organization. It is safe for
// concurrent use.
type Client struct {
	base      url.URL // scheme, host and path prefix without trailing slash
	token     string
	org       string
	hc        *http.Client
	pageSize  int
	maxBody   int64
	onRequest func(method, route string, status int, d time.Duration)
}

// String describes the client without its token.
func (c *Client) String() string {
	return fmt.Sprintf("sytex.Client{BaseURL:%q OrganizationID:%s}", c.base.String(), c.org)
}

// GoString describes the client without its token.
func (c *Client) GoString() string { return c.String() }

// New validates o and returns a Client.
func New(o Options) (*Client, error) {
	bad := func(format string, a ...any) (*Client, error) {
		return nil, fmt.Errorf("sytex: invalid options: "+format, a...)
	}
	if strings.TrimSpace(o.BaseURL) == "" {
		return bad("BaseURL is empty")
	}
	u, err := url.Parse(o.BaseURL)
	if err != nil {
		return bad("BaseURL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return bad("BaseURL must be http or https, got scheme %q", u.Scheme)
	}
	if u.Host == "" {
		return bad("BaseURL has no host")
	}
	if u.User != nil {
		return bad("BaseURL must not contain credentials")
	}
	if u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return bad("BaseURL must not have a query or fragment")
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	u.ForceQuery = false

	if o.Token == "" {
		return bad("Token is empty")
	}
	for i := 0; i < len(o.Token); i++ {
		// Refuse anything that could split or corrupt the header; do not
		// echo the token.
		if b := o.Token[i]; b <= ' ' || b == 0x7f {
			return bad("Token contains whitespace or control characters")
		}
	}
	if o.OrganizationID <= 0 {
		return bad("OrganizationID must be > 0, got %d", o.OrganizationID)
	}
	if o.PageSize < 0 {
		return bad("PageSize must be >= 0, got %d", o.PageSize)
	}
	if o.PageSize == 0 {
		o.PageSize = DefaultPageSize
	}
	if o.MaxBodyBytes < 0 {
		return bad("MaxBodyBytes must be >= 0, got %d", o.MaxBodyBytes)
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	var hc http.Client
	if o.HTTPClient != nil {
		hc = *o.HTTPClient
	} else {
		hc = http.Client{Timeout: DefaultTimeout}
	}
	// Never follow redirects: a 301/302 on a write turns POST into GET (the
	// create would silently not happen), and a redirect may lead elsewhere.
	// The 3xx comes back as an *APIError instead.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	return &Client{
		base:      *u,
		token:     o.Token,
		org:       strconv.FormatInt(o.OrganizationID, 10),
		hc:        &hc,
		pageSize:  o.PageSize,
		maxBody:   o.MaxBodyBytes,
		onRequest: o.OnRequest,
	}, nil
}

func (c *Client) collectionURL() *url.URL {
	u := c.base
	u.Path += RouteCollection
	return &u
}

func (c *Client) itemURL(id int64) *url.URL {
	u := c.base
	u.Path += RouteCollection + strconv.FormatInt(id, 10) + "/"
	return &u
}

// do performs one exchange. It returns the body of a response whose status is
// in ok; any other status is an *APIError, an oversized 2xx body or a 2xx not
// in ok is a *ResponseError, and a failed exchange is a transport error that
// wraps the cause (context errors included).
func (c *Client) do(ctx context.Context, method, route string, u *url.URL, payload []byte, ok ...int) (int, []byte, error) {
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return 0, nil, &transportError{method: method, path: u.Path, err: err, token: c.token}
	}
	req.Header.Set("Authorization", "Token "+c.token)
	req.Header.Set("Organization", c.org)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", UserAgent)
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}

	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.observe(method, route, 0, time.Since(start))
		return 0, nil, &transportError{method: method, path: u.Path, err: err, token: c.token}
	}
	defer func() {
		// Drain a little so the connection can be reused, then close.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}()

	success := resp.StatusCode >= 200 && resp.StatusCode < 300
	limit := c.maxBody
	if !success && limit > 64<<10 {
		limit = 64 << 10 // only the first bytes of an error body are kept
	}
	data, readErr := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	c.observe(method, route, resp.StatusCode, time.Since(start))

	if !success {
		return resp.StatusCode, nil, &APIError{
			Status:     resp.StatusCode,
			Method:     method,
			Path:       u.Path,
			Body:       c.clean(data, maxErrorBody),
			RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		}
	}
	if readErr != nil {
		return 0, nil, &transportError{method: method, path: u.Path, err: readErr, token: c.token}
	}
	if int64(len(data)) > c.maxBody {
		return resp.StatusCode, nil, c.responseError(resp.StatusCode, method, u.Path,
			fmt.Sprintf("response body exceeds %d bytes", c.maxBody), data)
	}
	for _, s := range ok {
		if resp.StatusCode == s {
			return resp.StatusCode, data, nil
		}
	}
	return resp.StatusCode, nil, c.responseError(resp.StatusCode, method, u.Path,
		fmt.Sprintf("unexpected status %d", resp.StatusCode), data)
}

func (c *Client) observe(method, route string, status int, d time.Duration) {
	if c.onRequest != nil {
		c.onRequest(method, route, status, d)
	}
}

func (c *Client) responseError(status int, method, path, reason string, body []byte) *ResponseError {
	return &ResponseError{
		Status:  status,
		Method:  method,
		Path:    path,
		Reason:  reason,
		Snippet: c.clean(body, maxSnippet),
	}
}

// clean makes server-supplied text safe to put in an error: the token is
// redacted (a hostile server may echo headers), invalid UTF-8 and control
// characters are replaced (no log injection), and the result is cut to at
// most max bytes on a rune boundary.
func (c *Client) clean(b []byte, max int) string {
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	if c.token != "" {
		s = strings.ReplaceAll(s, c.token, "[REDACTED]")
	}
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\r' || r == '\t':
			return ' '
		case r < ' ' || (r >= 0x7f && r < 0xa0) || r == 0x2028 || r == 0x2029:
			return '\uFFFD'
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) <= max {
		return s
	}
	cut := max - len("...")
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// maxRetryAfter bounds a server-supplied Retry-After so a hostile value
// cannot overflow or park a caller for days.
const maxRetryAfter = 24 * time.Hour

// parseRetryAfter reads delta-seconds or an HTTP date (RFC 9110 §10.2.3).
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		d := t.Sub(now)
		if d < 0 {
			return 0
		}
		return min(d, maxRetryAfter)
	}
	return 0
}

// transportError is a failed exchange (DNS, connect, timeout, cancelled
// context, broken body). It is transient; Unwrap exposes the cause, so
// errors.Is(err, context.DeadlineExceeded) works.
type transportError struct {
	method, path string
	err          error
	token        string
}

func (e *transportError) Error() string {
	msg := e.err.Error()
	if e.token != "" {
		msg = strings.ReplaceAll(msg, e.token, "[REDACTED]")
	}
	return "sytex: " + e.method + " " + e.path + ": " + msg
}

func (e *transportError) Unwrap() error { return e.err }
