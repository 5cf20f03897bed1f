package httpx_test

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/httpx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/sytex"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// tlsServer is an HTTPS server with a self-signed certificate, and that
// certificate written as a PEM CA bundle.
func tlsServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	f, err := os.Create(ca)
	if err != nil {
		t.Fatal(err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return srv, ca
}

func get(ctx context.Context, hc *http.Client, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return resp.StatusCode, nil
}

func TestTLSVerification(t *testing.T) {
	srv, ca := tlsServer(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })

	t.Run("without the CA the certificate is refused", func(t *testing.T) {
		hc, err := httpx.New(5*time.Second, "", 4)
		if err != nil {
			t.Fatal(err)
		}
		_, err = get(testCtx(t), hc, srv.URL)
		var verr *tls.CertificateVerificationError
		if !errors.As(err, &verr) || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Fatalf("err = %v, want a certificate verification error", err)
		}
	})

	t.Run("with the CA bundle it is trusted", func(t *testing.T) {
		hc, err := httpx.New(5*time.Second, ca, 4)
		if err != nil {
			t.Fatal(err)
		}
		if status, err := get(testCtx(t), hc, srv.URL); err != nil || status != 200 {
			t.Fatalf("status %d err %v", status, err)
		}
		tr := hc.Transport.(*http.Transport)
		if tr.TLSClientConfig.InsecureSkipVerify || tr.TLSClientConfig.MinVersion < tls.VersionTLS12 {
			t.Errorf("TLS config %+v", tr.TLSClientConfig)
		}
	})

	t.Run("the CA bundle does not make other names valid", func(t *testing.T) {
		hc, err := httpx.New(5*time.Second, ca, 4)
		if err != nil {
			t.Fatal(err)
		}
		// The test certificate is for 127.0.0.1 and example.com: asking for
		// another name over the same address must fail verification.
		hc.Transport.(*http.Transport).TLSClientConfig.ServerName = "not-the-server.test"
		_, err = get(testCtx(t), hc, srv.URL)
		var verr *tls.CertificateVerificationError
		if !errors.As(err, &verr) {
			t.Fatalf("err = %v, want a certificate verification error", err)
		}
	})
}

func TestBadCAFile(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("this is not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyOnly := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(keyOnly, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), 0o600); err != nil {
		t.Fatal(err)
	}
	badCert := filepath.Join(dir, "badcert.pem")
	if err := os.WriteFile(badCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")}), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	tests := []struct {
		name, file, want string
	}{
		{"missing", missing, "read CA bundle: open " + missing + ": no such file or directory"},
		{"a directory", dir, "read CA bundle: read " + dir + ": is a directory"},
		{"garbage", garbage, "CA bundle " + garbage + " holds no PEM certificate"},
		{"a key, not a certificate", keyOnly, "CA bundle " + keyOnly + " holds no PEM certificate"},
		{"a certificate block that does not parse", badCert, "CA bundle " + badCert + " holds no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hc, err := httpx.New(time.Second, tt.file, 1)
			if err == nil || hc != nil {
				t.Fatalf("accepted: %v", err)
			}
			if err.Error() != tt.want {
				t.Errorf("err = %q\nwant %q", err, tt.want)
			}
		})
	}
}

// TestClientsOverTLS: the OZmap and Sytex clients built on httpx say what to
// set when the certificate is not trusted, and work once the CA is given. An
// untrusted certificate is configuration for OZmap (no retry); for Sytex it
// keeps the consumer's contract (not permanent: the breaker holds the boxes).
func TestClientsOverTLS(t *testing.T) {
	var hits atomic.Int64
	srv, ca := tlsServer(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if strings.HasPrefix(r.URL.Path, "/api/v2/") {
			fmt.Fprint(w, `{"total":0,"rows":[],"hasNextPage":false}`)
			return
		}
		fmt.Fprint(w, `{"count":0,"next":null,"results":[]}`)
	})
	for _, withCA := range []bool{false, true} {
		caFile := ""
		if withCA {
			caFile = ca
		}
		hc, err := httpx.New(5*time.Second, caFile, 4)
		if err != nil {
			t.Fatal(err)
		}
		oz, err := ozmap.New(ozmap.Options{BaseURL: srv.URL, APIKey: "oz-key-123456", HTTPClient: hc, MaxAttempts: 3, RetryBaseDelay: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		hits.Store(0)
		var ozErr error
		for _, err := range oz.Boxes(testCtx(t)) {
			if err != nil {
				ozErr = err
			}
		}
		sy, err := sytex.New(sytex.Options{BaseURL: srv.URL, Token: "sytex-token-123456", OrganizationID: 1, HTTPClient: hc})
		if err != nil {
			t.Fatal(err)
		}
		_, syErr := sy.FindByName(testCtx(t), "x")
		if withCA {
			if ozErr != nil || syErr != nil || hits.Load() != 2 {
				t.Fatalf("with the CA: ozmap %v, sytex %v, %d requests", ozErr, syErr, hits.Load())
			}
			continue
		}
		t.Log(ozErr)
		t.Log(syErr)
		if ozErr == nil || !strings.Contains(ozErr.Error(), "set OZMAP_CA_FILE") || ozmap.IsTransient(ozErr) {
			t.Errorf("ozmap: %v (transient=%v)", ozErr, ozmap.IsTransient(ozErr))
		}
		if syErr == nil || !strings.Contains(syErr.Error(), "set SYTEX_CA_FILE") || sytex.IsPermanent(syErr) {
			t.Errorf("sytex: %v", syErr)
		}
		if hits.Load() != 0 {
			t.Errorf("the handler ran %d times without a handshake", hits.Load())
		}
		for _, e := range []error{ozErr, syErr} {
			if e != nil && (strings.Contains(e.Error(), "oz-key-123456") || strings.Contains(e.Error(), "sytex-token-123456")) {
				t.Errorf("secret in %v", e)
			}
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{"-1", 0},
		{"soon", 0},
		{"Wed, 01 Jan 2025 12:00:30 GMT", 30 * time.Second},
		{"Wed, 01 Jan 2025 11:00:00 GMT", 0},
		{"99999999999", 24 * time.Hour},
		{"Fri, 01 Jan 2100 00:00:00 GMT", 24 * time.Hour},
	}
	for _, tt := range tests {
		if got := httpx.RetryAfter(tt.v, now); got != tt.want {
			t.Errorf("httpx.RetryAfter(%q) = %v, want %v", tt.v, got, tt.want)
		}
	}
}
