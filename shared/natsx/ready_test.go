package natsx

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/config"
)

// Readiness follows the NATS connection: false while the server is away,
// true again once the client has reconnected by itself.
func TestReadyFollowsTheConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	s, err := StartEmbedded(EmbeddedOptions{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	port := s.Addr().(*net.TCPAddr).Port
	listen := "127.0.0.1:" + strconv.Itoa(port)
	log := slog.New(slog.DiscardHandler)
	conn, err := Open(ctx, config.NATS{URL: "nats://" + listen, Replicas: 1, MaxAge: 24 * time.Hour, DLQMaxAge: 24 * time.Hour},
		"ready-test", TopologyFrom(config.NATS{Replicas: 1, MaxAge: 24 * time.Hour, DLQMaxAge: 24 * time.Hour}, 0), log)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Ready(); err != nil {
		t.Fatalf("ready while connected: %v", err)
	}

	s.Shutdown()
	s.WaitForShutdown()
	waitFor(t, ctx, "not ready while NATS is down", func() bool { return conn.Ready() != nil })

	s2, err := StartEmbedded(EmbeddedOptions{StoreDir: dir, Listen: listen})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Shutdown()
	waitFor(t, ctx, "ready again after NATS is back", func() bool { return conn.Ready() == nil })
	// And JetStream works again through the same connection.
	waitFor(t, ctx, "JetStream usable after the restart", func() bool {
		_, err := conn.JS.Stream(ctx, WorkStream)
		return err == nil
	})
}

func waitFor(t *testing.T, ctx context.Context, what string, ok func() bool) {
	t.Helper()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting: %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
