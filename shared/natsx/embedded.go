package natsx

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedOptions configure an in-process NATS server with JetStream.
type EmbeddedOptions struct {
	StoreDir string // JetStream file storage directory
	Listen   string // host:port; "127.0.0.1:-1" (random port) when empty
	Name     string // server name (needed in a cluster)
	// Cluster, when set, makes the server a member of a route-based cluster.
	ClusterName   string
	ClusterListen string   // host:port for routes
	Routes        []string // nats-route://host:port of the other members
}

// StartEmbedded starts a NATS server with JetStream inside this process. It is
// what `make demo`, the tests and a one-machine deployment use.
func StartEmbedded(o EmbeddedOptions) (*server.Server, error) {
	if o.StoreDir == "" {
		return nil, errors.New("embedded NATS: a store directory is required")
	}
	host, port := "127.0.0.1", -1
	if o.Listen != "" {
		h, p, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS: listen address %q: %w", o.Listen, err)
		}
		if port, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("embedded NATS: listen port %q: %w", p, err)
		}
		host = h
	}
	opts := &server.Options{
		ServerName: o.Name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		NoLog:      true,
	}
	if o.ClusterName != "" {
		ch, cp, err := net.SplitHostPort(o.ClusterListen)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS: cluster listen address %q: %w", o.ClusterListen, err)
		}
		cport, err := strconv.Atoi(cp)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS: cluster port %q: %w", cp, err)
		}
		opts.Cluster = server.ClusterOpts{Name: o.ClusterName, Host: ch, Port: cport}
		opts.Routes = server.RoutesFromStr(strings.Join(o.Routes, ","))
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded NATS: server not ready after 15s")
	}
	return s, nil
}
