package ozmap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/httpx"
)

// ErrUnauthorized is matched (errors.Is) by every error caused by a 401 or
// 403 answer. It is a configuration problem: retrying will not help.
var ErrUnauthorized = errors.New("ozmap: the API key was rejected or lacks access to this resource (check OZMAP_API_KEY and the user's project permissions)")

// ErrBodyTooLarge is matched by errors caused by a response body larger than
// Options.MaxBodyBytes. The body is not read past the cap. It is permanent:
// the same page is as large on a retry (a smaller OZMAP_PAGE_SIZE helps).
var ErrBodyTooLarge = errors.New("ozmap: response body too large")

// ErrNotJSON is matched by errors caused by a 2xx answer whose body is not
// the JSON page expected: not JSON at all (an HTML login, proxy or
// maintenance page, an empty body) or JSON of the wrong shape (no "rows"
// array).
//
// Classification: a body that is not JSON at all is transient — it almost
// always comes from something in front of OZmap (a proxy during a deploy, a
// WAF, a load balancer's error page) and passes — so it is retried within
// MaxAttempts, and the final error names the Content-Type and the start of
// the body. Valid JSON of the wrong shape is permanent: OZMAP_URL points at
// something that is not OZmap's API v2, and asking again will not change it.
var ErrNotJSON = errors.New("ozmap: response is not JSON")

// errShape marks an ErrNotJSON that is valid JSON of the wrong shape
// (permanent; see ErrNotJSON).
var errShape = errors.New("unexpected JSON shape")

// ErrInvalidProjectID is matched by New's error for a malformed
// Options.ProjectIDs entry.
var ErrInvalidProjectID = errors.New("ozmap: invalid project id")

// ErrPagingLoop is matched when the server keeps returning pages past any
// plausible end (a repeated page, or far more pages than total implies).
var ErrPagingLoop = errors.New("ozmap: server paging does not terminate")

// APIError is a non-2xx answer from OZmap. Body is the start of the response
// body (at most 512 bytes) with the API key removed.
type APIError struct {
	Status       int
	Method, Path string
	Body         string
	// RetryAfter is the server's Retry-After on 429/503, zero otherwise.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("ozmap: %s %s: %s", e.Method, e.Path, e.statusText())
	if e.Body != "" {
		s += ": " + e.Body
	}
	return s
}

func (e *APIError) statusText() string {
	if t := http.StatusText(e.Status); t != "" {
		return fmt.Sprintf("%d %s", e.Status, t)
	}
	return strconv.Itoa(e.Status)
}

// IsTransient reports whether err is worth retrying later: 429, 5xx,
// timeouts, connection errors, bodies cut short, and 2xx bodies that are not
// JSON at all (a proxy's page; see ErrNotJSON). Authentication errors, other
// 3xx/4xx (a refused redirect included), JSON of the wrong shape, oversized
// bodies, certificate errors and cancellation are not.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status == http.StatusTooManyRequests || ae.Status >= 500 && ae.Status != http.StatusNotImplemented
	}
	if errors.Is(err, errShape) || errors.Is(err, ErrBodyTooLarge) || errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrPagingLoop) {
		return false
	}
	if errors.Is(err, ErrNotJSON) {
		return true
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return true
	}
	// Certificate problems are configuration, not weather.
	if httpx.IsCertError(err) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return true // connection refused/reset, DNS hiccup, server hung up
	}
	var oe *net.OpError
	return errors.As(err, &oe)
}

// opError is what Boxes and BoxTypes return: one sentence naming the request,
// how it failed and after how many attempts, wrapping the cause (an
// *APIError, ErrUnauthorized, a network error...).
type opError struct {
	msg  string
	errs []error
}

func (e *opError) Error() string   { return e.msg }
func (e *opError) Unwrap() []error { return e.errs }

// opErr builds the final error for op. Its message is computed (and
// redacted) here, so the error value never holds the key.
func (c *Client) opErr(op string, attempts int, err error) error {
	after := ""
	if attempts > 1 {
		after = fmt.Sprintf(" after %d attempts", attempts)
	}
	var (
		msg  string
		errs = []error{err}
		ae   *APIError
	)
	if ue, ok := err.(*url.Error); ok && ue.Err != nil {
		// op names the request already; the URL (its long filter query)
		// adds only length. The chain keeps the *url.Error.
		err = &causeError{msg: ue.Err.Error(), cause: ue}
	}
	switch {
	case errors.As(err, &ae):
		msg = fmt.Sprintf("ozmap: %s: %s%s", op, ae.statusText(), after)
		if ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden {
			msg += ": " + strings.TrimPrefix(ErrUnauthorized.Error(), "ozmap: ")
			errs = append(errs, ErrUnauthorized)
		}
		if ae.Body != "" {
			msg += ": " + ae.Body
		}
	case after != "":
		msg = fmt.Sprintf("ozmap: %s: failed%s: %v", op, after, err)
	default:
		msg = fmt.Sprintf("ozmap: %s: %v", op, err)
	}
	switch {
	case httpx.IsCertError(err):
		msg += " (the server's certificate is not trusted: if OZmap uses a private CA, set OZMAP_CA_FILE to its PEM bundle)"
	case errors.Is(err, ErrNotJSON) && !errors.Is(err, errShape):
		msg += " (a proxy or maintenance page, or OZMAP_URL is not OZmap's API address, e.g. https://client.ozmap.com.br:9994)"
	case errors.Is(err, errShape):
		msg += " (is OZMAP_URL OZmap's API address, e.g. https://client.ozmap.com.br:9994?)"
	}
	return &opError{msg: c.redact(msg), errs: errs}
}
