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
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/httpx"
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

// reply is a usable answer: its status, body and Content-Type.
type reply struct {
	status int
	body   []byte
	ctype  string
}

// do performs one exchange. It returns the body of a response whose status is
// in ok; any other status is an *APIError, an oversized 2xx body or a 2xx not
// in ok is a *ResponseError, and a failed exchange is a transport error that
// wraps the cause (context errors included). Bodies are read up to a cap and
// no further (closing the rest drops the connection), so memory stays bounded
// whatever the server sends.
func (c *Client) do(ctx context.Context, method, route string, u *url.URL, payload []byte, ok ...int) (reply, error) {
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return reply{}, &transportError{method: method, path: u.Path, err: err, token: c.token}
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
		return reply{}, &transportError{method: method, path: u.Path, err: err, token: c.token}
	}
	success := resp.StatusCode >= 200 && resp.StatusCode < 300
	limit := c.maxBody
	if !success && limit > 64<<10 {
		limit = 64 << 10 // only the first bytes of an error body are kept
	}
	tooLong := resp.ContentLength > limit
	defer func() {
		if !tooLong {
			// Drain a little so the connection can be reused, then close.
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		}
		resp.Body.Close()
	}()

	var data []byte
	var readErr error
	if !tooLong || !success {
		// An error body announced as huge still shows its first bytes.
		var buf bytes.Buffer
		if resp.ContentLength > 0 && !tooLong {
			buf.Grow(int(resp.ContentLength) + bytes.MinRead)
		}
		_, readErr = buf.ReadFrom(io.LimitReader(resp.Body, limit+1))
		data = buf.Bytes()
		tooLong = tooLong || int64(len(data)) > limit
	}
	c.observe(method, route, resp.StatusCode, time.Since(start))
	ctype := resp.Header.Get("Content-Type")

	if !success {
		ae := &APIError{
			Status:     resp.StatusCode,
			Method:     method,
			Path:       u.Path,
			Body:       c.clean(data, maxErrorBody),
			RetryAfter: httpx.RetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		}
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			ae.Body = c.redirectNote(resp, ae.Body)
		}
		return reply{status: resp.StatusCode, ctype: ctype}, ae
	}
	if tooLong {
		reason := fmt.Sprintf("response body exceeds %d bytes (MaxBodyBytes); stopped reading there", c.maxBody)
		if resp.ContentLength > c.maxBody {
			reason = fmt.Sprintf("response body exceeds %d bytes (MaxBodyBytes): it announced %d; not read", c.maxBody, resp.ContentLength)
		}
		return reply{status: resp.StatusCode, ctype: ctype}, c.responseError(resp.StatusCode, method, u.Path, reason, data)
	}
	if readErr != nil {
		return reply{}, &transportError{method: method, path: u.Path, err: readErr, token: c.token}
	}
	for _, s := range ok {
		if resp.StatusCode == s {
			return reply{status: resp.StatusCode, body: data, ctype: ctype}, nil
		}
	}
	return reply{status: resp.StatusCode, ctype: ctype}, c.responseError(resp.StatusCode, method, u.Path,
		fmt.Sprintf("unexpected status %d", resp.StatusCode), data)
}

// redirectNote says where a redirect pointed (without its query, which may
// carry anything) ahead of the body: redirects are never followed (see New).
func (c *Client) redirectNote(resp *http.Response, body string) string {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return body
	}
	target := "an unparsable Location"
	if ref, err := url.Parse(loc); err == nil {
		t := resp.Request.URL.ResolveReference(ref)
		t.User, t.RawQuery, t.ForceQuery, t.Fragment = nil, "", false, ""
		target = strconv.Quote(c.clean([]byte(t.String()), 200))
	}
	note := "redirect to " + target + " not followed (set SYTEX_URL to the address that answers)"
	if body != "" {
		note += ": " + body
	}
	return note
}

func (c *Client) observe(method, route string, status int, d time.Duration) {
	if c.onRequest != nil {
		c.onRequest(method, route, status, d)
	}
}

// unusable is the *ResponseError for a 2xx body that did not decode: what was
// wrong, with the Content-Type and size that came back.
func (c *Client) unusable(method, path string, rep reply, err error) *ResponseError {
	reason := err.Error()
	if len(bytes.TrimSpace(rep.body)) == 0 {
		reason = "body is empty"
	}
	reason = fmt.Sprintf("%s (Content-Type %q, %d bytes)", reason, c.clean([]byte(rep.ctype), 64), len(rep.body))
	return c.responseError(rep.status, method, path, reason, rep.body)
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
// redacted (a hostile server may echo headers; a copy cut by the limit is
// removed too), invalid UTF-8 and control characters are replaced (no log
// injection), and the result is cut to at most max bytes on a rune boundary.
// Only the start of b is looked at, so a huge body costs nothing more.
func (c *Client) clean(b []byte, max int) string {
	cut := false
	if window := 4*max + len(c.token); len(b) > window {
		b, cut = b[:window], true
	}
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	if c.token != "" {
		s = strings.ReplaceAll(s, c.token, "[REDACTED]")
		if cut {
			s = trimTokenPrefix(s, c.token)
		}
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
	cutAt := max - len("...")
	for cutAt > 0 && !isRuneStart(s[cutAt]) {
		cutAt--
	}
	return s[:cutAt] + "..."
}

// trimTokenPrefix drops the end of s when it is the beginning of token: text
// cut in the middle of an echoed token must not show even part of it.
func trimTokenPrefix(s, token string) string {
	for k := min(len(token)-1, len(s)); k > 0; k-- {
		if strings.HasSuffix(s, token[:k]) {
			return s[:len(s)-k]
		}
	}
	return s
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

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
	var ue *url.Error
	if errors.As(e.err, &ue) && ue.Err != nil {
		// Method and path are said already; the full URL (the searched
		// name in its query) adds only length.
		msg = ue.Err.Error()
	}
	if e.token != "" {
		msg = strings.ReplaceAll(msg, e.token, "[REDACTED]")
	}
	if httpx.IsCertError(e.err) {
		msg += " (the server's certificate is not trusted: if Sytex uses a private CA, set SYTEX_CA_FILE to its PEM bundle)"
	}
	return "sytex: " + e.method + " " + e.path + ": " + msg
}

func (e *transportError) Unwrap() error { return e.err }
