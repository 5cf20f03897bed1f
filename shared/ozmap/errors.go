package ozmap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ErrUnauthorized is matched (errors.Is) by every error caused by a 401 or
// 403 answer. It is a configuration problem: retrying will not help.
var ErrUnauthorized = errors.New("ozmap: the API key was rejected or lacks access to this resource (check OZMAP_API_KEY and the user's project permissions)")

// ErrBodyTooLarge is matched by errors caused by a response body larger than
// Options.MaxBodyBytes.
var ErrBodyTooLarge = errors.New("ozmap: response body too large")

// ErrNotJSON is matched by errors caused by a 2xx answer whose body is not
// JSON (for example an HTML login or proxy page).
var ErrNotJSON = errors.New("ozmap: response is not JSON")

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
// timeouts, connection errors and bodies cut short. Authentication errors,
// other 4xx, non-JSON bodies, oversized bodies and cancellation are not.
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
	if errors.Is(err, ErrNotJSON) || errors.Is(err, ErrBodyTooLarge) || errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrPagingLoop) {
		return false
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return true
	}
	// Certificate problems are configuration, not weather.
	var (
		unknownCA  x509.UnknownAuthorityError
		hostErr    x509.HostnameError
		invalidErr x509.CertificateInvalidError
		verifyErr  *tls.CertificateVerificationError
	)
	if errors.As(err, &unknownCA) || errors.As(err, &hostErr) || errors.As(err, &invalidErr) || errors.As(err, &verifyErr) {
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
	return &opError{msg: c.redact(msg), errs: errs}
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(24*time.Hour/time.Second) {
			n = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
