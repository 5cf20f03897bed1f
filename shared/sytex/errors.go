package sytex

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

const (
	maxErrorBody = 512 // bytes of an error body kept in APIError.Body
	maxSnippet   = 160 // bytes of a bad body kept in ResponseError.Snippet
)

// ErrInvalidInput is wrapped by errors for requests the client refuses to
// send because they cannot succeed (empty or non-UTF-8 name, NaN coordinate,
// id <= 0, ...). IsPermanent reports true for it.
var ErrInvalidInput = errors.New("sytex: invalid input")

// APIError is a non-2xx answer from Sytex.
type APIError struct {
	Status int
	Method string
	Path   string // URL path, without the query
	// Body is the start of the response body (at most 512 bytes), with the
	// token redacted and control characters replaced.
	Body string
	// RetryAfter is the parsed Retry-After header (0 if absent), capped at 24h.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	s := "sytex: " + e.Method + " " + e.Path + ": " + strconv.Itoa(e.Status)
	if t := http.StatusText(e.Status); t != "" {
		s += " " + t
	}
	if e.Body != "" {
		s += ": " + e.Body
	}
	return s
}

// ResponseError is a 2xx answer that cannot be used: not JSON (an HTML page
// from a proxy), empty, truncated, of the wrong shape (a field of the wrong
// type), too large, or an unexpected 2xx status. Reason says which, with the
// Content-Type and size that came back.
//
// It is deliberately not permanent (IsPermanent is false): a garbage 2xx
// almost always comes from the path in front of Sytex (a proxy, a maintenance
// page, an outage) rather than from the request, so the consumer retries the
// box with backoff and dead-letters it only after CONSUMER_MAX_ATTEMPTS. A
// create or patch answered this way may have happened: search again before
// writing again.
type ResponseError struct {
	Status  int
	Method  string
	Path    string
	Reason  string
	Snippet string // start of the body, sanitized like APIError.Body
}

func (e *ResponseError) Error() string {
	return fmt.Sprintf("sytex: %s %s: unusable response (status %d): %s; body starts %q",
		e.Method, e.Path, e.Status, e.Reason, e.Snippet)
}

// IsPermanent reports whether err is the request's own fault, so retrying the
// same request cannot succeed: an *APIError with a 4xx status other than 408
// and 429, or ErrInvalidInput. 401/403 are permanent for the request but mean
// a configuration problem overall; see IsAuth. Everything else (5xx, 429,
// 408, 3xx, transport errors, timeouts, *ResponseError) is transient.
func IsPermanent(err error) bool {
	if errors.Is(err, ErrInvalidInput) {
		return true
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status >= 400 && ae.Status < 500 &&
			ae.Status != http.StatusRequestTimeout && ae.Status != http.StatusTooManyRequests
	}
	return false
}

// IsAuth reports whether err is a 401 or 403 from Sytex: a bad token or a
// wrong organization, which affects every request, not only this one.
func IsAuth(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && (ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden)
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidInput}, a...)...)
}
