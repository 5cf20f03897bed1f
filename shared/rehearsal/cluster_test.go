package rehearsal_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/rehearsal"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/scenario"
)

// Scenario 7: a three-node JetStream cluster, streams with three replicas.
// The OZMAP_BOXES leader is shut down in the middle of a sync, while the
// producer publishes and two consumers drain: no box is lost, none is
// stored twice, and Sytex gets exactly one create per box.
func TestClusterStreamLeaderLossMidSync(t *testing.T) {
	ctx := testCtx(t, 180*time.Second)
	env, err := rehearsal.StartCluster(binDir, t.TempDir(), 3)
	if err != nil {
		t.Fatalf("rehearsal.StartCluster: %v", err)
	}
	defer env.Close()
	env.Extra["CONSUMER_ACK_WAIT"] = "10s" // acks lost in the failover come back soon
	env.Extra["SYTEX_TIMEOUT"] = "5s"
	ex := scenario.Seed(env.OZmap, env.Sytex, newBoxes(600), 17)
	eligible := len(ex.Want)
	env.OZmap.SetLatency(300 * time.Millisecond) // 6 pages: the sync takes a few seconds
	env.Sytex.ResetCounts()

	cs := startConsumers(t, ctx, env, 2)
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := env.Produce(ctx)
		done <- result{out, err}
	}()
	waitFor(t, ctx, "the producer to publish some boxes", func() bool {
		return streamState(t, ctx, env, natsx.WorkStream).Msgs >= 150
	})
	s, err := env.JS.Stream(ctx, natsx.WorkStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("%s is not replicated on three servers: %+v", natsx.WorkStream, info.Cluster)
	}
	var leader *server.Server
	for _, srv := range env.Servers {
		if srv.Name() == info.Cluster.Leader {
			leader = srv
		}
	}
	if leader == nil {
		t.Fatalf("stream leader %q is not one of the cluster's servers", info.Cluster.Leader)
	}
	leader.Shutdown()
	leader.WaitForShutdown()
	t.Logf("shut down stream leader %s with %d of %d boxes stored", info.Cluster.Leader, info.State.Msgs, eligible)

	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatalf("producer -once did not finish: %v\nlogs:\n%s", ctx.Err(), env.Logs())
	}
	if r.err != nil {
		t.Fatalf("producer -once failed across the failover: %v\nstdout: %s\nlogs:\n%s", r.err, r.out, env.Logs())
	}
	t.Logf("producer -once: %s", r.out)
	if info.State.Msgs >= uint64(eligible) {
		t.Fatalf("the leader was shut down after the sync had published everything")
	}
	if after := streamState(t, ctx, env, natsx.WorkStream); after.Msgs == 0 {
		t.Fatalf("%s is empty after the failover", natsx.WorkStream)
	}
	waitIdle(t, ctx, env)
	stopAll(t, cs...)

	checkEachBoxOnce(t, ctx, env, eligible)
	checkSytex(t, ex, env.Sytex)
	checkElementCount(t, ex, env)
	checkNoDeadLetters(t, ctx, env)
	if n := env.Sytex.Counts(); n.Create != int64(eligible) || n.Update != 0 {
		t.Errorf("Sytex requests %+v; want exactly %d creates (one per box) and no update", n, eligible)
	}
}
