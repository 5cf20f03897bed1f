package natsx

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/config"
)

// Conn is a program's link to JetStream, and the embedded server when the
// program runs one.
type Conn struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	Server *server.Server // nil unless NATS_EMBEDDED=true
}

// TopologyFrom turns the configuration into stream and consumer settings.
// ackWait is the consumer program's CONSUMER_ACK_WAIT; the other programs
// pass 0 and leave an existing consumer as it is.
func TopologyFrom(c config.NATS, ackWait time.Duration) Topology {
	t := DefaultTopology()
	t.Replicas = c.Replicas
	t.MaxAge = c.MaxAge
	t.DLQMaxAge = c.DLQMaxAge
	if ackWait > 0 {
		t.AckWait = ackWait
		t.OwnsConsumer = true
	}
	return t
}

// Open starts the embedded server if configured, connects, and makes sure
// the streams and the consumer exist. jsOpts tune the JetStream context
// (the producer bounds its async publishes with them).
func Open(ctx context.Context, c config.NATS, name string, topo Topology, log *slog.Logger, jsOpts ...jetstream.JetStreamOpt) (*Conn, error) {
	out := &Conn{}
	url := c.URL
	if c.Embedded {
		if err := os.MkdirAll(c.EmbeddedDir, 0o750); err != nil {
			return nil, fmt.Errorf("NATS_EMBEDDED_DIR: %w", err)
		}
		s, err := StartEmbedded(EmbeddedOptions{StoreDir: c.EmbeddedDir, Listen: c.EmbeddedListen, Name: name})
		if err != nil {
			return nil, err
		}
		out.Server = s
		url = s.ClientURL()
		log.Info("embedded NATS server started", "url", url, "store_dir", c.EmbeddedDir)
	}
	nc, err := Connect(ConnectOptions{URL: url, Creds: c.Creds, TLSCA: c.TLSCA, TLSCert: c.TLSCert, TLSKey: c.TLSKey, Name: name, Logger: log})
	if err != nil {
		out.Close()
		return nil, err
	}
	out.NC = nc
	js, err := jetstream.New(nc, jsOpts...)
	if err != nil {
		out.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	out.JS = js
	if err := ensureWithRetry(ctx, js, topo, log); err != nil {
		out.Close()
		return nil, err
	}
	return out, nil
}

// ensureWithRetry retries the topology setup for a while: at a cold start of
// a whole deployment the JetStream cluster may still be electing a leader.
func ensureWithRetry(ctx context.Context, js jetstream.JetStream, topo Topology, log *slog.Logger) error {
	deadline := time.Now().Add(60 * time.Second)
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := EnsureTopology(cctx, js, topo)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		log.Warn("JetStream not ready, retrying", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// Ready is the readiness check: ready while connected to NATS.
func (c *Conn) Ready() error {
	if !c.NC.IsConnected() {
		return fmt.Errorf("NATS %s", c.NC.Status())
	}
	return nil
}

// Close drains the connection (flushing acks and publishes) and stops the
// embedded server.
func (c *Conn) Close() {
	if c == nil {
		return
	}
	if c.NC != nil {
		_ = c.NC.Drain()
		for i := 0; i < 100 && !c.NC.IsClosed(); i++ {
			time.Sleep(20 * time.Millisecond)
		}
		c.NC.Close()
	}
	if c.Server != nil {
		c.Server.Shutdown()
		c.Server.WaitForShutdown()
	}
}
