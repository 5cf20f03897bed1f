// Package config reads the programs' settings from environment variables with
// go-envconfig and validates them, so that a wrong value stops a program at
// start with one line naming the variable and what it expects.
package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // SYNC_TIMEZONE must resolve in a scratch image with no zoneinfo

	"github.com/robfig/cron/v3"
	"github.com/sethvargo/go-envconfig"
)

// NATS is how both programs reach NATS and shape the JetStream objects.
type NATS struct {
	URL     string `env:"NATS_URL, default=nats://127.0.0.1:4222"`
	Creds   string `env:"NATS_CREDS"`
	TLSCA   string `env:"NATS_TLS_CA"`
	TLSCert string `env:"NATS_TLS_CERT"`
	TLSKey  string `env:"NATS_TLS_KEY"`

	Replicas  int           `env:"NATS_STREAM_REPLICAS, default=1"`
	MaxAge    time.Duration `env:"NATS_STREAM_MAX_AGE, default=168h"`
	DLQMaxAge time.Duration `env:"NATS_DLQ_MAX_AGE, default=720h"`

	// Embedded runs a NATS server with JetStream inside the program, for a
	// one-machine deployment; the other program connects to it via NATS_URL.
	Embedded       bool   `env:"NATS_EMBEDDED, default=false"`
	EmbeddedDir    string `env:"NATS_EMBEDDED_DIR, default=./data/nats"`
	EmbeddedListen string `env:"NATS_EMBEDDED_LISTEN, default=127.0.0.1:4222"`
}

// Log is the logging and monitoring setup.
type Log struct {
	Format string `env:"LOG_FORMAT, default=json"`
	Level  string `env:"LOG_LEVEL, default=info"`
	// HTTPAddr serves /metrics, /healthz and /readyz; empty disables it.
	HTTPAddr string `env:"HTTP_ADDR, default=:8080"`
}

// Producer is the producer's configuration.
type Producer struct {
	NATS NATS
	Log  Log

	OZmapURL         string        `env:"OZMAP_URL, required"`
	OZmapAPIKey      string        `env:"OZMAP_API_KEY, required"`
	OZmapPageSize    int           `env:"OZMAP_PAGE_SIZE, default=500"`
	OZmapTimeout     time.Duration `env:"OZMAP_TIMEOUT, default=60s"`
	OZmapMaxAttempts int           `env:"OZMAP_MAX_ATTEMPTS, default=6"`
	OZmapCAFile      string        `env:"OZMAP_CA_FILE"`
	// OZmapProjects limits the sync to these OZmap projects (comma-separated
	// ids); empty syncs every project the API key can see.
	OZmapProjects string `env:"OZMAP_PROJECT_IDS"`

	Schedule   string        `env:"SYNC_SCHEDULE, default=0 21 * * *"`
	TimeZone   string        `env:"SYNC_TIMEZONE, default=America/Sao_Paulo"`
	Catchup    time.Duration `env:"SYNC_CATCHUP, default=6h"`
	MaxPending int           `env:"PRODUCER_MAX_PENDING, default=1024"`

	location   *time.Location
	schedule   cron.Schedule
	projectIDs []string
}

// ProjectIDs is OZMAP_PROJECT_IDS parsed; nil means every project.
func (c *Producer) ProjectIDs() []string { return c.projectIDs }

// Location is SYNC_TIMEZONE, loaded.
func (c *Producer) Location() *time.Location { return c.location }

// ScheduleSpec is SYNC_SCHEDULE, parsed.
func (c *Producer) ScheduleSpec() cron.Schedule { return c.schedule }

// Consumer is the consumer's configuration.
type Consumer struct {
	NATS NATS
	Log  Log

	SytexURL       string        `env:"SYTEX_URL, required"`
	SytexToken     string        `env:"SYTEX_TOKEN, required"`
	SytexOrgID     int64         `env:"SYTEX_ORGANIZATION_ID, required"`
	NETypeMap      string        `env:"SYTEX_NE_TYPE_MAP"`
	NETypeDefault  int64         `env:"SYTEX_NE_TYPE_DEFAULT"`
	SytexTimeout   time.Duration `env:"SYTEX_TIMEOUT, default=20s"`
	SytexPageSize  int           `env:"SYTEX_PAGE_SIZE, default=50"`
	SytexCAFile    string        `env:"SYTEX_CA_FILE"`
	BreakerFails   int           `env:"SYTEX_BREAKER_FAILURES, default=5"`
	BreakerOpenFor time.Duration `env:"SYTEX_BREAKER_OPEN_TIMEOUT, default=30s"`

	Concurrency     int           `env:"CONSUMER_CONCURRENCY, default=8"`
	MaxAttempts     int           `env:"CONSUMER_MAX_ATTEMPTS, default=10"`
	AckWait         time.Duration `env:"CONSUMER_ACK_WAIT, default=60s"`
	RetryBase       time.Duration `env:"CONSUMER_RETRY_BASE, default=2s"`
	RetryMax        time.Duration `env:"CONSUMER_RETRY_MAX, default=5m"`
	ShutdownTimeout time.Duration `env:"CONSUMER_SHUTDOWN_TIMEOUT, default=25s"`
	// DryRun computes every box's outcome and records it (run report, box
	// status) without writing to Sytex: for a first rollout.
	DryRun bool `env:"CONSUMER_DRY_RUN, default=false"`

	neTypes map[string]int64
}

// NETypes is SYTEX_NE_TYPE_MAP parsed: OZmap box-type code → ne_type id.
func (c *Consumer) NETypes() map[string]int64 { return c.neTypes }

// LoadProducer reads and validates the producer's settings.
func LoadProducer(ctx context.Context, lookup func(string) (string, bool)) (*Producer, error) {
	var c Producer
	if err := process(ctx, &c, lookup); err != nil {
		return nil, err
	}
	var errs []error
	errs = append(errs, c.NATS.validate()...)
	errs = append(errs, c.Log.validate()...)
	errs = append(errs, checkHTTPURL("OZMAP_URL", c.OZmapURL, "https://client.ozmap.com.br:9994"))
	errs = append(errs, positive("OZMAP_PAGE_SIZE", c.OZmapPageSize), positiveDur("OZMAP_TIMEOUT", c.OZmapTimeout),
		positive("OZMAP_MAX_ATTEMPTS", c.OZmapMaxAttempts), positive("PRODUCER_MAX_PENDING", c.MaxPending))
	if c.OZmapPageSize > 10000 {
		errs = append(errs, fmt.Errorf("OZMAP_PAGE_SIZE: %d is too large (at most 10000)", c.OZmapPageSize))
	}
	errs = append(errs, fileExists("OZMAP_CA_FILE", c.OZmapCAFile))
	loc, err := time.LoadLocation(c.TimeZone)
	if err != nil || c.TimeZone == "" {
		errs = append(errs, fmt.Errorf("SYNC_TIMEZONE: %q is not an IANA time zone (e.g. America/Sao_Paulo)", c.TimeZone))
	}
	c.location = loc
	if c.schedule, err = ParseSchedule(c.Schedule); err != nil {
		errs = append(errs, err)
	}
	c.projectIDs, err = ParseProjectIDs(c.OZmapProjects)
	errs = append(errs, err)
	if c.Catchup < 0 {
		errs = append(errs, fmt.Errorf("SYNC_CATCHUP: %s must not be negative (e.g. 6h, or 0 to disable)", c.Catchup))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &c, nil
}

// ParseProjectIDs parses OZMAP_PROJECT_IDS: OZmap project ids (24 hex
// characters, as in the project's URL), separated by commas.
func ParseProjectIDs(s string) ([]string, error) {
	var ids []string
	seen := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		id := strings.TrimSpace(f)
		if id == "" {
			continue
		}
		if !objectIDRe.MatchString(id) {
			return nil, fmt.Errorf("OZMAP_PROJECT_IDS: %q is not an OZmap project id (24 hex characters, e.g. 5d9f3ff9200141000647f814); separate several with commas", truncate(id, 40))
		}
		if !seen[strings.ToLower(id)] {
			seen[strings.ToLower(id)] = true
			ids = append(ids, id)
		}
	}
	if strings.TrimSpace(s) != "" && len(ids) == 0 {
		return nil, fmt.Errorf("OZMAP_PROJECT_IDS: %q lists no project id; unset it to sync every project", truncate(s, 40))
	}
	return ids, nil
}

var objectIDRe = regexp.MustCompile(`^[0-9a-fA-F]{24}$`)

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// ParseSchedule parses a standard 5-field cron expression (minute hour
// day-of-month month day-of-week).
func ParseSchedule(expr string) (cron.Schedule, error) {
	if strings.HasPrefix(strings.TrimSpace(expr), "CRON_TZ=") || strings.HasPrefix(strings.TrimSpace(expr), "TZ=") {
		return nil, fmt.Errorf("SYNC_SCHEDULE: %q: set the zone with SYNC_TIMEZONE, not in the expression", expr)
	}
	s, err := cron.ParseStandard(expr)
	if err != nil {
		return nil, fmt.Errorf("SYNC_SCHEDULE: %q is not a 5-field cron expression like \"0 21 * * *\": %v", expr, err)
	}
	return s, nil
}

// LoadConsumer reads and validates the consumer's settings.
func LoadConsumer(ctx context.Context, lookup func(string) (string, bool)) (*Consumer, error) {
	var c Consumer
	if err := process(ctx, &c, lookup); err != nil {
		return nil, err
	}
	var errs []error
	errs = append(errs, c.NATS.validate()...)
	errs = append(errs, c.Log.validate()...)
	errs = append(errs, checkHTTPURL("SYTEX_URL", c.SytexURL, "https://app.sytex.io"))
	if c.SytexOrgID <= 0 {
		errs = append(errs, fmt.Errorf("SYTEX_ORGANIZATION_ID: %d must be a positive integer (the number in https://app.sytex.io/o/<id>/)", c.SytexOrgID))
	}
	m, err := ParseNETypeMap(c.NETypeMap)
	errs = append(errs, err)
	c.neTypes = m
	if c.NETypeDefault < 0 {
		errs = append(errs, fmt.Errorf("SYTEX_NE_TYPE_DEFAULT: %d must be a positive ne_type id, or unset", c.NETypeDefault))
	}
	errs = append(errs,
		positive("CONSUMER_CONCURRENCY", c.Concurrency), positive("CONSUMER_MAX_ATTEMPTS", c.MaxAttempts),
		positive("SYTEX_BREAKER_FAILURES", c.BreakerFails), positive("SYTEX_PAGE_SIZE", c.SytexPageSize),
		positiveDur("SYTEX_TIMEOUT", c.SytexTimeout), positiveDur("SYTEX_BREAKER_OPEN_TIMEOUT", c.BreakerOpenFor),
		positiveDur("CONSUMER_RETRY_BASE", c.RetryBase), positiveDur("CONSUMER_RETRY_MAX", c.RetryMax),
		positiveDur("CONSUMER_SHUTDOWN_TIMEOUT", c.ShutdownTimeout), fileExists("SYTEX_CA_FILE", c.SytexCAFile))
	if c.Concurrency > 1024 {
		errs = append(errs, fmt.Errorf("CONSUMER_CONCURRENCY: %d is too large (at most 1024)", c.Concurrency))
	}
	// The ack wait must outlast one Sytex call by a margin, or JetStream
	// hands the box to another replica while this one is still writing it.
	if c.AckWait < 2*c.SytexTimeout || c.AckWait < 5*time.Second {
		errs = append(errs, fmt.Errorf("CONSUMER_ACK_WAIT: %s must be at least twice SYTEX_TIMEOUT (%s) and at least 5s", c.AckWait, c.SytexTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &c, nil
}

var codeRe = regexp.MustCompile(`^[^=,\s][^=,]*$`)

// ParseNETypeMap parses SYTEX_NE_TYPE_MAP: "CTO=321,CEO=322".
func ParseNETypeMap(s string) (map[string]int64, error) {
	m := map[string]int64{}
	if strings.TrimSpace(s) == "" {
		return m, nil
	}
	for _, pair := range strings.Split(s, ",") {
		code, id, ok := strings.Cut(strings.TrimSpace(pair), "=")
		code = strings.TrimSpace(code)
		n, err := strconv.ParseInt(strings.TrimSpace(id), 10, 64)
		if !ok || !codeRe.MatchString(code) || err != nil || n <= 0 {
			return nil, fmt.Errorf("SYTEX_NE_TYPE_MAP: %q is not CODE=ID with a positive integer ID (e.g. CTO=321,CEO=322)", pair)
		}
		if _, dup := m[code]; dup {
			return nil, fmt.Errorf("SYTEX_NE_TYPE_MAP: box type %q appears twice", code)
		}
		m[code] = n
	}
	return m, nil
}

// Topology returns the JetStream settings both programs agree on.
func (n NATS) validate() []error {
	var errs []error
	if strings.TrimSpace(n.URL) == "" {
		errs = append(errs, errors.New("NATS_URL: empty (e.g. nats://127.0.0.1:4222, or several comma-separated)"))
	}
	for _, u := range strings.Split(n.URL, ",") {
		pu, err := url.Parse(strings.TrimSpace(u))
		if err != nil || pu.Host == "" || !(pu.Scheme == "nats" || pu.Scheme == "tls" || pu.Scheme == "ws" || pu.Scheme == "wss") {
			errs = append(errs, fmt.Errorf("NATS_URL: %q is not a nats://host:port URL", redactUserinfo(u)))
		}
	}
	if n.Replicas != 1 && n.Replicas != 3 && n.Replicas != 5 {
		errs = append(errs, fmt.Errorf("NATS_STREAM_REPLICAS: %d must be 1, 3 or 5", n.Replicas))
	}
	errs = append(errs, positiveDur("NATS_STREAM_MAX_AGE", n.MaxAge), positiveDur("NATS_DLQ_MAX_AGE", n.DLQMaxAge),
		fileExists("NATS_CREDS", n.Creds), fileExists("NATS_TLS_CA", n.TLSCA), fileExists("NATS_TLS_CERT", n.TLSCert), fileExists("NATS_TLS_KEY", n.TLSKey))
	if (n.TLSCert == "") != (n.TLSKey == "") {
		errs = append(errs, errors.New("NATS_TLS_CERT and NATS_TLS_KEY: set both for mutual TLS, or neither"))
	}
	if n.MaxAge < 24*time.Hour {
		errs = append(errs, fmt.Errorf("NATS_STREAM_MAX_AGE: %s is shorter than a day; the work stream must keep at least one night's sync for replay", n.MaxAge))
	}
	return errs
}

func (l Log) validate() []error {
	var errs []error
	if l.Format != "json" && l.Format != "text" {
		errs = append(errs, fmt.Errorf("LOG_FORMAT: %q must be json or text", l.Format))
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.Level)); err != nil {
		errs = append(errs, fmt.Errorf("LOG_LEVEL: %q must be debug, info, warn or error", l.Level))
	}
	return errs
}

// SlogLevel returns the parsed level (info when invalid; validate first).
func (l Log) SlogLevel() slog.Level {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(l.Level))
	return lv
}

func process(ctx context.Context, target any, lookup func(string) (string, bool)) error {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	err := envconfig.ProcessWith(ctx, &envconfig.Config{
		Target:   target,
		Lookuper: envconfig.LookuperFunc(lookup),
	})
	if err != nil {
		return friendly(reflect.TypeOf(target).Elem(), err)
	}
	return nil
}

// friendly rewrites go-envconfig's error, which names the Go field, to name
// the environment variable instead; it never repeats the value (it may be a
// secret).
func friendly(t reflect.Type, err error) error {
	msg := err.Error()
	if errors.Is(err, envconfig.ErrMissingRequired) {
		name := msg[strings.LastIndex(msg, ": ")+2:]
		return fmt.Errorf("%s: required but not set%s", name, example(name))
	}
	var path []string
	rest := msg
	for {
		field, tail, ok := strings.Cut(rest, ": ")
		if !ok {
			break
		}
		f, found := t.FieldByName(field)
		if !found {
			break
		}
		path = append(path, field)
		rest = tail
		if f.Type.Kind() != reflect.Struct {
			name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
			return fmt.Errorf("%s: invalid value (expected %s)", name, expects(f.Type))
		}
		t = f.Type
	}
	return fmt.Errorf("configuration: %v", err)
}

func expects(t reflect.Type) string {
	switch {
	case t == reflect.TypeOf(time.Duration(0)):
		return "a duration such as 30s, 5m or 6h"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return "an integer"
	}
	return t.String()
}

func example(name string) string {
	switch name {
	case "OZMAP_URL":
		return " (e.g. https://client.ozmap.com.br:9994)"
	case "OZMAP_API_KEY":
		return " (the OZmap integration user's API key)"
	case "SYTEX_URL":
		return " (e.g. https://app.sytex.io)"
	case "SYTEX_TOKEN":
		return " (a Sytex user's API token)"
	case "SYTEX_ORGANIZATION_ID":
		return " (the number in https://app.sytex.io/o/<id>/)"
	}
	return ""
}

func checkHTTPURL(name, v, eg string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s: %q is not an http(s) URL (e.g. %s)", name, redactUserinfo(v), eg)
	}
	if u.User != nil {
		return fmt.Errorf("%s: must not carry credentials in the URL; use the API key/token variable", name)
	}
	return nil
}

func redactUserinfo(v string) string {
	if i := strings.LastIndex(v, "@"); i >= 0 {
		if j := strings.Index(v, "://"); j >= 0 && j < i {
			return v[:j+3] + "[REDACTED]" + v[i:]
		}
		return "[REDACTED]" + v[i:]
	}
	return v
}

func positive(name string, v int) error {
	if v <= 0 {
		return fmt.Errorf("%s: %d must be a positive integer", name, v)
	}
	return nil
}

func positiveDur(name string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%s: %s must be a positive duration (e.g. 30s)", name, d)
	}
	return nil
}

func fileExists(name, path string) error {
	if path == "" {
		return nil
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("%s: cannot read %q: %v", name, path, errors.Unwrap(err))
	}
	return nil
}

// LoadInto reads settings into any struct built from this package's parts
// (such as one holding only NATS and Log, for `consumer replay`).
func LoadInto(ctx context.Context, target any, lookup func(string) (string, bool)) error {
	if err := process(ctx, target, lookup); err != nil {
		return err
	}
	v := reflect.ValueOf(target).Elem()
	var errs []error
	for i := 0; i < v.NumField(); i++ {
		switch f := v.Field(i).Interface().(type) {
		case NATS:
			errs = append(errs, f.validate()...)
		case Log:
			errs = append(errs, f.validate()...)
		}
	}
	return errors.Join(errs...)
}
