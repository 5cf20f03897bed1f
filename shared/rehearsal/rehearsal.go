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
	"strings"
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
	// Server is the NATS server (the first member of a cluster). RestartNATS
	// replaces it: do not keep a copy across a restart.
	Server *server.Server
	// Servers are every member of a cluster (StartCluster); just Server
	// otherwise. A test may shut members down.
	Servers []*server.Server
	NC      *nats.Conn
	JS      jetstream.JetStream
	OZmap   *ozmaptest.Server
	Sytex   *sytextest.Server
	// Extra environment for every program (overrides).
	Extra map[string]string

	natsURL  string // what the programs get as NATS_URL
	storeDir string // the single server's JetStream directory
	listen   string // the single server's host:port, kept across restarts

	mu   sync.Mutex
	logs bytes.Buffer // everything the programs printed
}

// Start starts NATS (data under dir) and the simulators.
func Start(binDir, dir string) (*Env, error) {
	storeDir := filepath.Join(dir, "nats")
	s, err := natsx.StartEmbedded(natsx.EmbeddedOptions{StoreDir: storeDir})
	if err != nil {
		return nil, err
	}
	e, err := newEnv(binDir, []*server.Server{s})
	if err != nil {
		return nil, err
	}
	e.storeDir = storeDir
	e.listen = s.Addr().String()
	return e, nil
}

// StartCluster starts a JetStream cluster of n servers on loopback (data
// under dir/nats-<i>) and the simulators. The programs get every server's
// URL in NATS_URL and NATS_STREAM_REPLICAS=n.
func StartCluster(binDir, dir string, n int) (*Env, error) {
	if n < 1 {
		return nil, errors.New("rehearsal: a cluster needs at least one server")
	}
	var servers []*server.Server
	shutdown := func() {
		for _, s := range servers {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}
	var routes []string
	for i := 1; i <= n; i++ {
		s, err := natsx.StartEmbedded(natsx.EmbeddedOptions{
			StoreDir: filepath.Join(dir, "nats-"+strconv.Itoa(i)),
			Name:     "rehearsal-" + strconv.Itoa(i), ClusterName: "rehearsal",
			ClusterListen: "127.0.0.1:-1", Routes: routes,
		})
		if err != nil {
			shutdown()
			return nil, err
		}
		servers = append(servers, s)
		routes = append(routes, "nats-route://"+s.ClusterAddr().String())
	}
	e, err := newEnv(binDir, servers)
	if err != nil {
		return nil, err
	}
	e.Extra["NATS_STREAM_REPLICAS"] = strconv.Itoa(n)
	// The members must find each other and elect a JetStream meta leader
	// before anything can be created.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := e.JS.AccountInfo(actx)
		acancel()
		if err == nil {
			return e, nil
		}
		select {
		case <-ctx.Done():
			e.Close()
			return nil, fmt.Errorf("rehearsal: JetStream cluster not ready: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func newEnv(binDir string, servers []*server.Server) (*Env, error) {
	urls := make([]string, len(servers))
	for i, s := range servers {
		urls[i] = s.ClientURL()
	}
	natsURL := strings.Join(urls, ",")
	shutdown := func() {
		for _, s := range servers {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}
	// The tests restart and stop servers: keep reconnecting.
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		shutdown()
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		shutdown()
		return nil, err
	}
	return &Env{
		BinDir: binDir, Server: servers[0], Servers: servers, NC: nc, JS: js,
		OZmap:   ozmaptest.NewServer(OZmapKey),
		Sytex:   sytextest.NewServer(SytexToken, SytexOrg),
		Extra:   map[string]string{},
		natsURL: natsURL,
	}, nil
}

// LogDirEnv names an environment variable: when it is set to a directory,
// every Env leaves its programs' whole output there when closed, and
// SaveLog writes there. `make test` sets it and greps the result for the
// test secrets, so a leak anywhere in a full test run fails the build.
const LogDirEnv = "REHEARSAL_LOG_DIR"

// SaveLog keeps one program output in $REHEARSAL_LOG_DIR, if set.
func SaveLog(name string, data []byte) {
	dir := os.Getenv(LogDirEnv)
	if dir == "" || len(data) == 0 {
		return
	}
	f, err := os.CreateTemp(dir, name+"-*.log")
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.Write(data)
}

// Close stops everything.
func (e *Env) Close() {
	SaveLog("env", []byte(e.Logs()))
	e.OZmap.Close()
	e.Sytex.Close()
	e.NC.Close()
	for _, s := range e.Servers {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// RestartNATS shuts the (single) NATS server down, keeps it down for down,
// and starts it again on the same address with the same store directory, as
// an operator restarting NATS does. Programs and e.NC reconnect by
// themselves. Not for clusters: shut members down through Servers instead.
func (e *Env) RestartNATS(down time.Duration) error {
	if e.storeDir == "" || len(e.Servers) != 1 {
		return errors.New("rehearsal: RestartNATS needs an environment from Start")
	}
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
	time.Sleep(down)
	// Go listens with SO_REUSEADDR: the port just released is free again.
	s, err := natsx.StartEmbedded(natsx.EmbeddedOptions{StoreDir: e.storeDir, Listen: e.listen})
	if err != nil {
		return fmt.Errorf("rehearsal: restart NATS on %s: %w", e.listen, err)
	}
	e.Server = s
	e.Servers = []*server.Server{s}
	return nil
}

// Environ is the environment the programs run with.
func (e *Env) Environ() []string {
	env := map[string]string{
		"NATS_URL":              e.natsURL,
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

// Process is a running producer daemon or consumer.
type Process struct {
	e      *Env
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has exited
	err    error         // its exit status, set before exited is closed
	own    bytes.Buffer  // what it printed (stdout and stderr), under e.mu
}

// Consumer is a running consumer process.
type Consumer = Process

// StartConsumer starts a consumer process and waits until it is pulling.
func (e *Env) StartConsumer(ctx context.Context) (*Consumer, error) {
	return e.startProcess(ctx, "consumer", nil, "consumer started")
}

// StartProducer starts a producer daemon (SYNC_SCHEDULE, SYNC_CATCHUP…
// from Extra) and waits until it has planned its next sync or started a
// catch-up.
func (e *Env) StartProducer(ctx context.Context) (*Process, error) {
	return e.startProcess(ctx, "producer", nil, "next sync scheduled", "catching up")
}

func (e *Env) startProcess(ctx context.Context, prog string, args []string, ready ...string) (*Process, error) {
	cmd := exec.Command(filepath.Join(e.BinDir, prog), args...)
	cmd.Env = e.Environ()
	p := &Process{e: e, cmd: cmd, exited: make(chan struct{})}
	cmd.Stdout = lockedWriter{e, &p.own}
	cmd.Stderr = lockedWriter{e, &p.own}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	for {
		out := p.Logs()
		for _, r := range ready {
			if strings.Contains(out, r) {
				return p, nil
			}
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("%s exited at start: %v\n%s", prog, p.err, p.Logs())
		case <-ctx.Done():
			p.Kill()
			return nil, fmt.Errorf("%s not started: %w\n%s", prog, ctx.Err(), p.Logs())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Logs returns what this process printed so far.
func (p *Process) Logs() string {
	p.e.mu.Lock()
	defer p.e.mu.Unlock()
	return p.own.String()
}

// Running reports whether the process has not exited.
func (p *Process) Running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM and waits for the exit (killing it after timeout). It
// returns nil only for an exit with status 0.
func (p *Process) Stop(timeout time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.exited:
		return p.err
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.exited
		return errors.New(filepath.Base(p.cmd.Path) + " did not exit after SIGTERM within " + timeout.String())
	}
}

// Kill sends SIGKILL (a crash) and waits for the process to go.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
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

// WaitIdle waits until every message of the work stream is done with:
// nothing pending or unacknowledged, and the consumer's ack floor at the
// stream's last sequence, twice in a row (a consumer leader elected a moment
// ago may briefly report a stale state).
func (e *Env) WaitIdle(ctx context.Context) error {
	var n uint64
	idle := 0
	for {
		var err error
		n, err = e.Backlog(ctx)
		if err == nil && n == 0 && e.ackedToEnd(ctx) {
			if idle++; idle >= 2 {
				return nil
			}
		} else {
			idle = 0
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("backlog still %d: %w", n, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ackedToEnd reports whether sytex-upsert's ack floor reached the work
// stream's last sequence.
func (e *Env) ackedToEnd(ctx context.Context) bool {
	s, err := e.JS.Stream(ctx, natsx.WorkStream)
	if err != nil {
		return false
	}
	si, err := s.Info(ctx)
	if err != nil {
		return false
	}
	c, err := e.JS.Consumer(ctx, natsx.WorkStream, natsx.UpsertConsumer)
	if err != nil {
		return false
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return false
	}
	return ci.AckFloor.Stream >= si.State.LastSeq
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
