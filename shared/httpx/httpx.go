// Package httpx builds the HTTP clients the programs use to reach OZmap and
// Sytex: TLS verified against the system roots plus an optional extra CA
// bundle, and a connection pool sized for the number of requests in flight.
package httpx

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// New returns a client with the given per-request timeout. caFile, when set,
// is a PEM bundle trusted in addition to the system roots (an on-premises
// OZmap with a private CA). maxConns is how many requests may be in flight
// to one host; idle connections are kept for all of them, because Go's
// default of two idle connections per host makes a concurrent consumer open
// and close a TCP+TLS connection for almost every request.
func New(timeout time.Duration, caFile string, maxConns int) (*http.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = max(100, maxConns*2)
	t.MaxIdleConnsPerHost = max(2, maxConns)
	t.IdleConnTimeout = 90 * time.Second
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA bundle: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA bundle %s holds no PEM certificate", caFile)
		}
		t.TLSClientConfig.RootCAs = pool
	}
	return &http.Client{Timeout: timeout, Transport: t}, nil
}

// IsCertError reports whether err is a TLS certificate verification failure
// (an unknown authority, a wrong host name, an expired or invalid
// certificate): the case where an error message should point at the CA
// bundle setting.
func IsCertError(err error) bool {
	var (
		unknownCA  x509.UnknownAuthorityError
		hostErr    x509.HostnameError
		invalidErr x509.CertificateInvalidError
		verifyErr  *tls.CertificateVerificationError
	)
	return errors.As(err, &unknownCA) || errors.As(err, &hostErr) || errors.As(err, &invalidErr) || errors.As(err, &verifyErr)
}

// MaxRetryAfter bounds a server-supplied Retry-After, so a hostile value
// cannot overflow or park a caller for days.
const MaxRetryAfter = 24 * time.Hour

// RetryAfter reads a Retry-After value, delta-seconds or an HTTP date
// (RFC 9110 §10.2.3), as a delay from now: 0 when absent, unreadable or
// past, at most MaxRetryAfter.
func RetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), MaxRetryAfter)
	}
	return 0
}
