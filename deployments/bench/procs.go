package main

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

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/rehearsal"
)

// tail keeps the last bytes a program printed (for error messages) and says
// when a marker has been seen.
type tail struct {
	mu     sync.Mutex
	buf    []byte
	marker []byte
	seen   chan struct{}
}

const tailBytes = 32 << 10

func newTail(marker string) *tail {
	return &tail{marker: []byte(marker), seen: make(chan struct{})}
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.marker) > 0 && bytes.Contains(t.buf, t.marker) {
		close(t.seen)
		t.marker = nil
	}
	if len(t.buf) > tailBytes {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailBytes/2:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// usage is what a finished child process used.
type usage struct {
	CPU    time.Duration // user + system, from the kernel's accounting
	MaxRSS int64         // bytes: peak resident set (VmHWM)
}

// cpuOf is the CPU time the kernel accounted to a finished child.
//
// Its ru_maxrss is not used: Go starts children with vfork semantics
// (CLONE_VM), and Linux folds the high-water mark of the address space the
// child leaves at exec, which is this process's, into the child's
// ru_maxrss. A child of a benchmark holding a million simulated boxes would
// report this process's size; hwm samples the child's own VmHWM instead.
func cpuOf(ps interface{ SysUsage() any }) time.Duration {
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok || ru == nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// hwm samples a running process's peak resident set (VmHWM in
// /proc/<pid>/status, which only grows) until stop is closed, and returns
// the last value read: the peak, short of at most one sampling period.
func hwm(pid int, stop <-chan struct{}) <-chan int64 {
	out := make(chan int64, 1)
	go func() {
		var peak int64
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if v := readHWM(pid); v > peak {
				peak = v
			}
			select {
			case <-stop:
				out <- peak
				return
			case <-t.C:
			}
		}
	}()
	return out
}

func readHWM(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// selfCPU is the CPU time this process (the embedded NATS server, the
// simulators and the harness) has used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// consumerProc is a real consumer process.
type consumerProc struct {
	cmd     *exec.Cmd
	out     *tail
	done    chan error
	stopHWM chan struct{}
	peakHWM <-chan int64
}

// startConsumer starts bin/consumer with the rehearsal environment and
// returns once it logged "consumer started" (it is pulling).
func startConsumer(ctx context.Context, env *rehearsal.Env) (*consumerProc, error) {
	cmd := exec.Command(filepath.Join(env.BinDir, "consumer"))
	cmd.Env = env.Environ()
	out := newTail("consumer started")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &consumerProc{cmd: cmd, out: out, done: make(chan error, 1), stopHWM: make(chan struct{})}
	c.peakHWM = hwm(cmd.Process.Pid, c.stopHWM)
	go func() { c.done <- cmd.Wait() }()
	select {
	case <-out.seen:
		return c, nil
	case err := <-c.done:
		return nil, fmt.Errorf("consumer exited at start: %v\n%s", err, out.String())
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-c.done
		return nil, fmt.Errorf("consumer not started: %w", ctx.Err())
	}
}

// stop sends SIGTERM, waits for the exit and returns the process's usage.
func (c *consumerProc) stop(timeout time.Duration) (usage, error) {
	close(c.stopHWM)
	peak := <-c.peakHWM
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-c.done:
	case <-time.After(timeout):
		_ = c.cmd.Process.Kill()
		<-c.done
		err = errors.New("consumer did not exit after SIGTERM within " + timeout.String())
	}
	if err != nil {
		err = fmt.Errorf("%w\n%s", err, c.out.String())
	}
	return usage{CPU: cpuOf(c.cmd.ProcessState), MaxRSS: peak}, err
}

// produceResult is one `producer -once` run.
type produceResult struct {
	Line  string // the summary line it printed
	Logs  string // the end of its log
	Wall  time.Duration
	Usage usage
}

// produce runs bin/producer -once to completion.
func produce(ctx context.Context, env *rehearsal.Env) (produceResult, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(env.BinDir, "producer"), "-once")
	cmd.Env = env.Environ()
	var stdout bytes.Buffer
	logs := newTail("")
	cmd.Stdout, cmd.Stderr = &stdout, logs
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return produceResult{}, err
	}
	stop := make(chan struct{})
	peak := hwm(cmd.Process.Pid, stop)
	// VmHWM only grows, and reads fail once the process is gone: the
	// highest value read is the peak.
	err := cmd.Wait()
	close(stop)
	maxRSS := <-peak
	r := produceResult{Line: string(bytes.TrimSpace(stdout.Bytes())), Wall: time.Since(start), Logs: logs.String()}
	if cmd.ProcessState != nil {
		r.Usage = usage{CPU: cpuOf(cmd.ProcessState), MaxRSS: maxRSS}
	}
	if err != nil {
		return r, fmt.Errorf("producer -once: %v\n%s\n%s", err, r.Line, logs.String())
	}
	return r, nil
}
