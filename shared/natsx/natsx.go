// Package natsx is the project's JetStream topology and connection setup: the
// work stream, its durable consumer, the dead-letter stream, and how both
// programs connect to NATS (URLs, credentials, TLS, reconnection).
//
// Both programs call EnsureTopology at start; it is idempotent, so whichever
// starts first creates the objects and the other finds them as they should be.
package natsx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/httpx"
)

// Names of the JetStream objects. They are the operator's vocabulary (README,
// NATS CLI commands, alerts) and so a public contract.
const (
	WorkStream     = "OZMAP_BOXES"
	WorkSubject    = "ozmap.boxes"     // a box is published on ozmap.boxes.<ozmap id>
	DLQStream      = "OZMAP_BOXES_DLQ" // dead letters, one subject per box
	DLQSubject     = "ozmap.dlq"       // ozmap.dlq.<ozmap id> or ozmap.dlq.invalid.<hash>
	UpsertConsumer = "sytex-upsert"
)

// Topology holds the tunable parts of the streams and the consumer.
type Topology struct {
	Replicas      int           // stream replicas (1 single node, 3 in a cluster)
	MaxAge        time.Duration // how long the work stream keeps boxes (replay horizon)
	DLQMaxAge     time.Duration // how long dead letters are kept
	Duplicates    time.Duration // dedup window; see DefaultDuplicates
	AckWait       time.Duration // consumer ack wait
	MaxAckPending int           // consumer-wide cap of unacked messages across every replica
	// OwnsConsumer is true for the consumer program only: it creates or
	// updates sytex-upsert with its settings. The producer and `consumer
	// replay` only create it when it is missing, so they never reset the
	// consumers' CONSUMER_ACK_WAIT to a default.
	OwnsConsumer bool
}

// DefaultDuplicates is the work stream's dedup window. It covers a rerun of
// the same evening's sync (the next morning included) but is shorter than the
// 24 h between two nightly runs, so every night republishes every box and
// Sytex is reconciled even when OZmap did not change.
const DefaultDuplicates = 20 * time.Hour

// DefaultTopology is what the programs use unless configured otherwise.
func DefaultTopology() Topology {
	return Topology{
		Replicas:      1,
		MaxAge:        7 * 24 * time.Hour,
		DLQMaxAge:     30 * 24 * time.Hour,
		Duplicates:    DefaultDuplicates,
		AckWait:       60 * time.Second,
		MaxAckPending: 1000,
	}
}

// WorkStreamConfig is the work stream: Limits retention so acked and failed
// boxes stay replayable (WorkQueue would delete them on ack and on Term), and
// one message per subject so the stream holds the latest version of each box
// and a newer publish replaces an older one still waiting.
func (t Topology) WorkStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              WorkStream,
		Description:       "OZmap boxes to upsert into Sytex, latest version per box",
		Subjects:          []string{WorkSubject + ".>"},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		MaxAge:            t.MaxAge,
		MaxMsgsPerSubject: 1,
		Duplicates:        min(t.Duplicates, t.MaxAge),
		Replicas:          t.Replicas,
		Discard:           jetstream.DiscardOld,
		AllowDirect:       true,
	}
}

// DLQStreamConfig is the dead-letter stream: one subject per box and one
// message per subject, so a box that fails again replaces its older letter
// and the stream lists each failing box once, with its latest reason.
func (t Topology) DLQStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              DLQStream,
		Description:       "OZmap boxes that could not be synced to Sytex; reason in Sync-* headers",
		Subjects:          []string{DLQSubject + ".>"},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		MaxAge:            t.DLQMaxAge,
		MaxMsgsPerSubject: 1,
		Replicas:          t.Replicas,
		AllowDirect:       true,
	}
}

// UpsertConsumerConfig is the durable pull consumer every consumer process
// shares. MaxDeliver is unlimited because the consumer counts real attempts
// itself and dead-letters a box after CONSUMER_MAX_ATTEMPTS; a server-side
// limit would silently drop a box without a dead letter.
func (t Topology) UpsertConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       UpsertConsumer,
		Description:   "upserts each OZmap box into Sytex",
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       t.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: t.MaxAckPending,
		FilterSubject: WorkSubject + ".>",
	}
}

// EnsureTopology creates or updates both streams and the durable consumer.
func EnsureTopology(ctx context.Context, js jetstream.JetStream, t Topology) error {
	if _, err := js.CreateOrUpdateStream(ctx, t.WorkStreamConfig()); err != nil {
		return fmt.Errorf("create or update stream %s: %w", WorkStream, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, t.DLQStreamConfig()); err != nil {
		return fmt.Errorf("create or update stream %s: %w", DLQStream, err)
	}
	if t.OwnsConsumer {
		if _, err := js.CreateOrUpdateConsumer(ctx, WorkStream, t.UpsertConsumerConfig()); err != nil {
			return fmt.Errorf("create or update consumer %s on %s: %w", UpsertConsumer, WorkStream, err)
		}
		return nil
	}
	if _, err := js.Consumer(ctx, WorkStream, UpsertConsumer); err == nil {
		return nil
	}
	if _, err := js.CreateConsumer(ctx, WorkStream, t.UpsertConsumerConfig()); err != nil && !errors.Is(err, jetstream.ErrConsumerExists) {
		return fmt.Errorf("create consumer %s on %s: %w", UpsertConsumer, WorkStream, err)
	}
	return nil
}

// ConnectOptions say how to reach NATS.
type ConnectOptions struct {
	URL     string // comma-separated server URLs
	Creds   string // optional .creds file
	TLSCA   string // optional CA bundle for the servers' certificates
	TLSCert string // optional client certificate (mutual TLS)
	TLSKey  string
	Name    string // connection name, visible in `nats server report connections`
	Logger  *slog.Logger
}

// Connect dials NATS and keeps reconnecting forever: a NATS restart must be a
// non-event for a daemon, which carries on once the server is back.
func Connect(o ConnectOptions) (*nats.Conn, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectJitter(500*time.Millisecond, 2*time.Second),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
		}),
	}
	if o.Creds != "" {
		opts = append(opts, nats.UserCredentials(o.Creds))
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if o.TLSCert != "" || o.TLSKey != "" {
		if o.TLSCert == "" || o.TLSKey == "" {
			return nil, errors.New("NATS_TLS_CERT and NATS_TLS_KEY must be set together")
		}
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	nc, err := nats.Connect(strings.TrimSpace(o.URL), opts...)
	if err != nil {
		hint := ""
		switch {
		case httpx.IsCertError(err):
			hint = " (the server's certificate is not trusted: set NATS_TLS_CA to the PEM bundle of the CA that signed it)"
		case o.TLSCert == "" && (strings.Contains(err.Error(), "closed by remote after TLS handshake") || strings.Contains(err.Error(), "certificate required")):
			hint = " (the server may require a client certificate: set NATS_TLS_CERT and NATS_TLS_KEY)"
		}
		return nil, fmt.Errorf("connect to NATS at %s: %w%s", RedactURLs(o.URL), err, hint)
	}
	return nc, nil
}

// RedactURLs hides user:password parts of NATS URLs so they can be logged.
func RedactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if at := strings.LastIndex(p, "@"); at >= 0 {
			scheme := ""
			if s := strings.Index(p, "://"); s >= 0 && s < at {
				scheme = p[:s+3]
			}
			p = scheme + "[REDACTED]" + p[at:]
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}
