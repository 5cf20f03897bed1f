// Package rehearsal runs the whole pipeline on one machine: an embedded
// JetStream server, the OZmap and Sytex simulators, and the real producer and
// consumer binaries as subprocesses pointed at them. `make demo` and the
// end-to-end tests use it; an operator can use it to rehearse a deployment.
package rehearsal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/natsx"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/ozmap/ozmaptest"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/scenario"
	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/sytex/sytextest"
)

// Secrets the simulators accept. Tests grep logs for them.
const (
	OZmapKey   = "ozmap-test-key-5ecret-7f3a"
	SytexToken = "sytex-test-token-5ecret-91c4"
	SytexOrg   = 139
)

// Env is a running rehearsal environment.
type Env struct {
	BinDir string
	Server *server.Server
	NC     *nats.Conn
	JS     jetstream.JetStream
	OZmap  *ozmaptest.Server
	Sytex  *sytextest.Server
	// Extra environment for every program (overrides).
	Extra map[string]string

	mu   sync.Mutex
	logs bytes.Buffer // everything the programs printed
}

// Start starts NATS (data under dir) and the simulators.
func Start(binDir, dir string) (*Env, error) {
	s, err := natsx.StartEmbedded(natsx.EmbeddedOptions{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		s.Shutdown()
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		s.Shutdown()
		return nil, err
	}
	return &Env{
		BinDir: binDir, Server: s, NC: nc, JS: js,
		OZmap: ozmaptest.NewServer(OZmapKey),
		Sytex: sytextest.NewServer(SytexToken, SytexOrg),
		Extra: map[string]string{},
	}, nil
}

// Close stops everything.
func (e *Env) Close() {
	e.OZmap.Close()
	e.Sytex.Close()
	e.NC.Close()
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
}

// Environ is the environment the programs run with.
func (e *Env) Environ() []string {
	env := map[string]string{
		"NATS_URL":              e.Server.ClientURL(),
		"OZMAP_URL":             e.OZmap.URL,
		"OZMAP_API_KEY":         OZmapKey,
		"OZMAP_PAGE_SIZE":       "100",
		"SYTEX_URL":             e.Sytex.URL,
		"SYTEX_TOKEN":           SytexToken,
		"SYTEX_ORGANIZATION_ID": strconv.Itoa(SytexOrg),
		"SYTEX_NE_TYPE_MAP":     scenario.NETypeMap,
		"CONSUMER_CONCURRENCY":  "8",
		"CONSUMER_RETRY_BASE":   "200ms",
		"LOG_FORMAT":            "text",
		"HTTP_ADDR":             "127.0.0.1:0",
		"PATH":                  os.Getenv("PATH"),
	}
	for k, v := range e.Extra {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// Logs returns everything the programs printed so far.
func (e *Env) Logs() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.logs.String()
}

type lockedWriter struct {
	e    *Env
	copy *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.e.mu.Lock()
	defer w.e.mu.Unlock()
	if w.copy != nil {
		w.copy.Write(p)
	}
	return w.e.logs.Write(p)
}

// Produce runs `producer -once` and returns its standard output.
func (e *Env) Produce(ctx context.Context) (string, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(e.BinDir, "producer"), "-once")
	cmd.Env = e.Environ()
	cmd.Stdout = lockedWriter{e, &out}
	cmd.Stderr = lockedWriter{e, nil}
	err := cmd.Run()
	return out.String(), err
}

// Consumer is a running consumer process.
type Consumer struct {
	cmd  *exec.Cmd
	done chan error
}

// StartConsumer starts a consumer process and waits until it is pulling.
func (e *Env) StartConsumer(ctx context.Context) (*Consumer, error) {
	cmd := exec.Command(filepath.Join(e.BinDir, "consumer"))
	cmd.Env = e.Environ()
	own := &bytes.Buffer{}
	cmd.Stdout = lockedWriter{e, nil}
	cmd.Stderr = lockedWriter{e, own}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &Consumer{cmd: cmd, done: make(chan error, 1)}
	go func() { c.done <- cmd.Wait() }()
	for {
		e.mu.Lock()
		started := bytes.Contains(own.Bytes(), []byte("consumer started"))
		e.mu.Unlock()
		if started {
			return c, nil
		}
		select {
		case err := <-c.done:
			return nil, fmt.Errorf("consumer exited at start: %v\n%s", err, own.String())
		case <-ctx.Done():
			c.Kill()
			return nil, fmt.Errorf("consumer not started: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop sends SIGTERM and waits for the exit (killing it after timeout).
func (c *Consumer) Stop(timeout time.Duration) error {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.done:
		return err
	case <-time.After(timeout):
		_ = c.cmd.Process.Kill()
		<-c.done
		return errors.New("consumer did not exit after SIGTERM within " + timeout.String())
	}
}

// Kill sends SIGKILL (a crash).
func (c *Consumer) Kill() {
	_ = c.cmd.Process.Kill()
	<-c.done
	c.done <- errors.New("killed")
}

// Backlog is the work the consumers still have: pending plus unacked.
func (e *Env) Backlog(ctx context.Context) (uint64, error) {
	c, err := e.JS.Consumer(ctx, natsx.WorkStream, natsx.UpsertConsumer)
	if err != nil {
		return 0, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}

// WaitIdle waits until the backlog is zero.
func (e *Env) WaitIdle(ctx context.Context) error {
	for {
		n, err := e.Backlog(ctx)
		if err == nil && n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("backlog still %d: %w", n, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// DeadLetters returns the DLQ's letters' box ids by kind.
func (e *Env) DeadLetters(ctx context.Context) (map[string][]string, error) {
	out := map[string][]string{}
	s, err := e.JS.Stream(ctx, natsx.DLQStream)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		kind := m.Header.Get("Sync-Kind")
		out[kind] = append(out[kind], m.Header.Get("Sync-Box-Id"))
	}
	return out, nil
}

// Build compiles the producer and consumer into dir (module root is found
// from the working directory with `go env GOMOD`).
func Build(ctx context.Context, dir string) error {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(string(bytes.TrimSpace(gomod)))
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator), "./producer", "./consumer")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	return nil
}
