// Package natstest starts an embedded JetStream server for tests, with the
// project's topology already in place.
package natstest

import (
	"context"
	"fmt"
	"strings"
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
	js := connect(t, s.ClientURL(), opts)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := natsx.EnsureTopology(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	return js
}

// StartCluster returns a JetStream context connected to every member of a
// fresh n-server JetStream cluster on loopback, once a meta leader is
// elected (streams with n replicas can be created). Everything stops with
// the test.
func StartCluster(t testing.TB, n int, opts ...jetstream.JetStreamOpt) jetstream.JetStream {
	t.Helper()
	var routes, urls []string
	for i := 1; i <= n; i++ {
		s, err := natsx.StartEmbedded(natsx.EmbeddedOptions{
			StoreDir: t.TempDir(), Name: fmt.Sprintf("natstest-%d", i), ClusterName: "natstest",
			ClusterListen: "127.0.0.1:-1", Routes: routes,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		routes = append(routes, "nats-route://"+s.ClusterAddr().String())
		urls = append(urls, s.ClientURL())
	}
	js := connect(t, strings.Join(urls, ","), opts)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.AccountInfo(actx)
		acancel()
		if err == nil {
			return js
		}
		select {
		case <-ctx.Done():
			t.Fatalf("JetStream cluster not ready: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// connect returns a JetStream context on a connection closed with the test.
func connect(t testing.TB, url string, opts []jetstream.JetStreamOpt) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
