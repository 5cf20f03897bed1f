// Package deployments holds no code: it is the home of the deployment
// material (Dockerfile, Kubernetes manifests, Grafana dashboard, Prometheus
// alerts) and of the test that keeps that material consistent with the
// programs' configuration contract (shared/config) and metric names.
package deployments
