package natsx_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/config"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
)

const (
	user     = "sync"
	password = "pa55-w0rd-never-shown"
	token    = "t0ken-never-shown-42"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// pki is a throw-away CA with a server certificate for 127.0.0.1 and a
// client certificate, all written as PEM files.
type pki struct {
	dir                 string
	caFile              string
	serverCert, srvKey  string
	clientCert, cltKey  string
	otherCA             string // a CA that signed nothing here
	ca                  *x509.Certificate
	caKey               *ecdsa.PrivateKey
	serialForNextIssued int64
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir(), serialForNextIssued: 2}
	p.ca, p.caKey = selfSignedCA(t, "test CA")
	p.caFile = p.writeCert(t, "ca.pem", p.ca.Raw)
	other, _ := selfSignedCA(t, "unrelated CA")
	p.otherCA = p.writeCert(t, "other-ca.pem", other.Raw)
	p.serverCert, p.srvKey = p.issue(t, "server", &x509.Certificate{
		Subject:     pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	p.clientCert, p.cltKey = p.issue(t, "client", &x509.Certificate{
		Subject:     pkix.Name{CommonName: "ozmap-sytex-sync"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return p
}

func selfSignedCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func (p *pki) issue(t *testing.T, name string, tmpl *x509.Certificate) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(p.serialForNextIssued)
	p.serialForNextIssued++
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyFile = filepath.Join(p.dir, name+"-key.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p.writeCert(t, name+".pem", der), keyFile
}

func (p *pki) writeCert(t *testing.T, name string, der []byte) string {
	t.Helper()
	f := filepath.Join(p.dir, name)
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// startServer runs a JetStream server on 127.0.0.1 that requires TLS (and a
// client certificate when mutual), with edit setting its authentication.
func startServer(t *testing.T, p *pki, mutual bool, edit func(*server.Options)) *server.Server {
	t.Helper()
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: p.serverCert, KeyFile: p.srvKey, CaFile: p.caFile, Verify: mutual, Timeout: 5,
	})
	if err != nil {
		t.Fatal(err)
	}
	o := &server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: true,
		TLS: true, TLSVerify: mutual, TLSConfig: tc, TLSTimeout: 5,
	}
	if edit != nil {
		edit(o)
	}
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

func hostPort(s *server.Server) string {
	return s.Addr().(*net.TCPAddr).String()
}

func natsConfig(url string) config.NATS {
	return config.NATS{URL: url, Replicas: 1, MaxAge: 168 * time.Hour, DLQMaxAge: 720 * time.Hour}
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// openAndPublish opens like the programs do (natsx.Open with the config
// struct) and publishes one box to the work stream.
func openAndPublish(t *testing.T, cfg config.NATS) {
	t.Helper()
	ctx := testCtx(t)
	conn, err := natsx.Open(ctx, cfg, "tls-test", natsx.TopologyFrom(cfg, 0), quietLogger())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer conn.Close()
	if _, err := conn.NC.TLSConnectionState(); err != nil {
		t.Fatalf("connection is not TLS: %v", err)
	}
	ack, err := conn.JS.Publish(ctx, natsx.WorkSubject+".5da61d35493d9c0006665404", []byte(`{"id":"5da61d35493d9c0006665404"}`))
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	if ack.Stream != natsx.WorkStream {
		t.Fatalf("ack from stream %q", ack.Stream)
	}
	if err := conn.Ready(); err != nil {
		t.Fatal(err)
	}
}

// assertNoSecret fails when err holds one of the secrets.
func assertNoSecret(t *testing.T, err error, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(err.Error(), s) {
			t.Fatalf("error shows a secret: %v", err)
		}
	}
}

func TestTLSWithUserPassword(t *testing.T) {
	p := newPKI(t)
	s := startServer(t, p, false, func(o *server.Options) { o.Username, o.Password = user, password })
	addr := hostPort(s)

	t.Run("tls:// URL with the CA connects and publishes", func(t *testing.T) {
		cfg := natsConfig(fmt.Sprintf("tls://%s:%s@%s", user, password, addr))
		cfg.TLSCA = p.caFile
		openAndPublish(t, cfg)
	})
	t.Run("nats:// URL is upgraded to TLS", func(t *testing.T) {
		cfg := natsConfig(fmt.Sprintf("nats://%s:%s@%s", user, password, addr))
		cfg.TLSCA = p.caFile
		openAndPublish(t, cfg)
	})

	tests := []struct {
		name  string
		url   string
		ca    string
		cause string
	}{
		{"without the CA", fmt.Sprintf("tls://%s:%s@%s", user, password, addr), "",
			"x509: certificate signed by unknown authority (the server's certificate is not trusted: set NATS_TLS_CA"},
		{"with an unrelated CA", fmt.Sprintf("tls://%s:%s@%s", user, password, addr), p.otherCA,
			"x509: certificate signed by unknown authority"},
		{"wrong password", fmt.Sprintf("tls://%s:%s@%s", user, "wrong-"+password, addr), p.caFile,
			"Authorization Violation"},
		{"no credentials", "tls://" + addr, p.caFile, "Authorization Violation"},
		{"CA file missing", fmt.Sprintf("tls://%s:%s@%s", user, password, addr), filepath.Join(p.dir, "nope.pem"),
			filepath.Join(p.dir, "nope.pem")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := natsx.Connect(natsx.ConnectOptions{URL: tt.url, TLSCA: tt.ca, Name: "tls-test", Logger: quietLogger()})
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			t.Log(err)
			assertNoSecret(t, err, password)
			if !strings.Contains(err.Error(), tt.cause) {
				t.Errorf("err = %q\nwant it to say %q", err, tt.cause)
			}
			if !strings.Contains(err.Error(), "connect to NATS at tls://[REDACTED]@"+addr) && tt.name != "no credentials" {
				t.Errorf("err = %q does not name the (redacted) URL", err)
			}
		})
	}
}

func TestTLSWithToken(t *testing.T) {
	p := newPKI(t)
	s := startServer(t, p, false, func(o *server.Options) { o.Authorization = token })
	addr := hostPort(s)

	cfg := natsConfig(fmt.Sprintf("tls://%s@%s", token, addr))
	cfg.TLSCA = p.caFile
	openAndPublish(t, cfg)

	nc, err := natsx.Connect(natsx.ConnectOptions{URL: fmt.Sprintf("tls://%s@%s", token, addr), Logger: quietLogger()})
	if err == nil {
		nc.Close()
		t.Fatal("connected without the CA")
	}
	assertNoSecret(t, err, token)
	nc, err = natsx.Connect(natsx.ConnectOptions{URL: fmt.Sprintf("tls://%s@%s", "wrong-"+token, addr), TLSCA: p.caFile, Logger: quietLogger()})
	if err == nil {
		nc.Close()
		t.Fatal("connected with a wrong token")
	}
	assertNoSecret(t, err, token)
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	s := startServer(t, p, true, func(o *server.Options) { o.Username, o.Password = user, password })
	url := fmt.Sprintf("tls://%s:%s@%s", user, password, hostPort(s))

	cfg := natsConfig(url)
	cfg.TLSCA, cfg.TLSCert, cfg.TLSKey = p.caFile, p.clientCert, p.cltKey
	openAndPublish(t, cfg)

	t.Run("without a client certificate", func(t *testing.T) {
		nc, err := natsx.Connect(natsx.ConnectOptions{URL: url, TLSCA: p.caFile, Logger: quietLogger()})
		if err == nil {
			nc.Close()
			t.Fatal("connected")
		}
		t.Log(err)
		assertNoSecret(t, err, password)
		if !strings.Contains(err.Error(), "tls") {
			t.Errorf("err = %q does not say TLS", err)
		}
	})
	t.Run("certificate without its key", func(t *testing.T) {
		_, err := natsx.Connect(natsx.ConnectOptions{URL: url, TLSCA: p.caFile, TLSCert: p.clientCert, Logger: quietLogger()})
		if err == nil || !strings.Contains(err.Error(), "NATS_TLS_CERT and NATS_TLS_KEY must be set together") {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestTLSWithCreds: NATS decentralized auth (operator/account/user JWTs), the
// .creds file given as NATS_CREDS, over TLS.
func TestTLSWithCreds(t *testing.T) {
	p := newPKI(t)
	operator, _ := nkeys.CreateOperator()
	opPub, _ := operator.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "test-operator"

	sysAcc, _ := nkeys.CreateAccount()
	sysPub, _ := sysAcc.PublicKey()
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	sysJWT, err := sc.Encode(operator)
	if err != nil {
		t.Fatal(err)
	}
	oc.SystemAccount = sysPub

	account, _ := nkeys.CreateAccount()
	accPub, _ := account.PublicKey()
	ac := jwt.NewAccountClaims(accPub)
	ac.Name = "SYNC"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	accJWT, err := ac.Encode(operator)
	if err != nil {
		t.Fatal(err)
	}

	userKey, _ := nkeys.CreateUser()
	userPub, _ := userKey.PublicKey()
	uc := jwt.NewUserClaims(userPub)
	uc.Name = "ozmap-sytex-sync"
	userJWT, err := uc.Encode(account)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := userKey.Seed()
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		t.Fatal(err)
	}
	credsFile := filepath.Join(p.dir, "sync.creds")
	if err := os.WriteFile(credsFile, creds, 0o600); err != nil {
		t.Fatal(err)
	}

	resolver := &server.MemAccResolver{}
	if err := resolver.Store(sysPub, sysJWT); err != nil {
		t.Fatal(err)
	}
	if err := resolver.Store(accPub, accJWT); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, p, false, func(o *server.Options) {
		o.TrustedOperators = []*jwt.OperatorClaims{oc}
		o.AccountResolver = resolver
		o.SystemAccount = sysPub
	})
	addr := hostPort(s)

	cfg := natsConfig("tls://" + addr)
	cfg.TLSCA, cfg.Creds = p.caFile, credsFile
	openAndPublish(t, cfg)

	nc, err := natsx.Connect(natsx.ConnectOptions{URL: "tls://" + addr, TLSCA: p.caFile, Logger: quietLogger()})
	if err == nil {
		nc.Close()
		t.Fatal("connected without credentials")
	}
	nc, err = natsx.Connect(natsx.ConnectOptions{URL: "tls://" + addr, Creds: credsFile, Logger: quietLogger()})
	if err == nil {
		nc.Close()
		t.Fatal("connected without the CA")
	}
	t.Log(err)
	assertNoSecret(t, err, string(seed), userJWT)
}
