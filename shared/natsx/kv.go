package natsx

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// KV buckets. `nats kv get OZMAP_SYNC_RUNS last` shows the latest run.
const (
	RunsBucket = "OZMAP_SYNC_RUNS" // run reports keyed by run id, plus "last"
	LockBucket = "OZMAP_SYNC_LOCK" // the scheduled-sync lock shared by producer replicas
	LockKey    = "sync"
	// LockTTL is how long a lock outlives its holder: a producer killed
	// mid-run releases the sync to another replica after this long.
	LockTTL = 90 * time.Second
)

// Runs opens (creating if needed) the run report bucket.
func Runs(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: RunsBucket, Description: "sync run reports", History: 1,
		TTL: 90 * 24 * time.Hour, Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("open KV bucket %s: %w", RunsBucket, err)
	}
	return kv, nil
}

// Lock opens (creating if needed) the lock bucket. Its MaxAge is the lock's
// TTL: a holder refreshes the key well within it.
func Lock(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: LockBucket, Description: "scheduled sync lock", History: 1,
		TTL: LockTTL, Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("open KV bucket %s: %w", LockBucket, err)
	}
	return kv, nil
}
