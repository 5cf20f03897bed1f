// Package natstest starts an embedded JetStream server for tests, with the
// project's topology already in place.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
)

// Start returns a JetStream context on a fresh embedded server with the
// streams and the durable consumer created. Everything stops with the test.
func Start(t testing.TB, topo natsx.Topology, opts ...jetstream.JetStreamOpt) jetstream.JetStream {
	t.Helper()
	s, err := natsx.StartEmbedded(natsx.EmbeddedOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := natsx.EnsureTopology(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	return js
}
