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
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults for the zero values of Options.
const (
	DefaultPageSize       = 500
	DefaultMaxAttempts    = 6
	DefaultRetryBaseDelay = 500 * time.Millisecond
	DefaultMaxBodyBytes   = 64 << 20
	DefaultMaxRetryAfter  = 5 * time.Minute
	DefaultTimeout        = 30 * time.Second

	maxBackoff     = 30 * time.Second
	errorBodyLimit = 512
	userAgent      = "ozmap-sytex-sync"
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
	// HTTPClient defaults to &http.Client{Timeout: 30s}.
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
	// MaxBodyBytes caps any response body read. Default 64 MiB. A larger
	// body is an error (ErrBodyTooLarge), never a silent truncation.
	MaxBodyBytes int64
	// Logger, when set, receives one Warn record per retry. The API key is
	// never logged.
	Logger *slog.Logger
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
	}
	if c.pageSize <= 0 {
		c.pageSize = DefaultPageSize
	}
	if c.hc == nil {
		c.hc = &http.Client{Timeout: DefaultTimeout}
	}
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
		c.maxBody = DefaultMaxBodyBytes
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

// get performs one GET with retries, handing each 2xx body to parse. A
// transient error from the request or from parse (a truncated body) is
// retried with backoff; anything else ends the call. op names the request in
// errors, e.g. "GET /api/v2/boxes page 3".
func (c *Client) get(ctx context.Context, u *url.URL, op string, parse func(body []byte, contentType string) error) error {
	for attempt := 1; ; attempt++ {
		body, ctype, err := c.getOnce(ctx, u)
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

func (c *Client) getOnce(ctx context.Context, u *url.URL) ([]byte, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Authorization", c.key)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	ctype := resp.Header.Get("Content-Type")

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit+1))
		// Drain a little more so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		body := c.redact(string(b))
		if len(body) > errorBodyLimit {
			body = truncateUTF8(body, errorBodyLimit) + "…"
		}
		ae := &APIError{
			Status: resp.StatusCode,
			Method: http.MethodGet,
			Path:   u.Path,
			Body:   strings.TrimSpace(body),
		}
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			ae.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
		return nil, ctype, ae
	}

	b, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBody+1))
	if err != nil {
		// A body cut short by the network: transient.
		return nil, ctype, fmt.Errorf("reading response body: %w", err)
	}
	if int64(len(b)) > c.maxBody {
		return nil, ctype, fmt.Errorf("%w (limit %d bytes)", ErrBodyTooLarge, c.maxBody)
	}
	return b, ctype, nil
}

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
