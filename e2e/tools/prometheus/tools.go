//go:build tools

// Package tools pins Prometheus for e2e/deps.sh, which builds the `prometheus` command from this
// module (Debian's package leaves Kubernetes service discovery out, and the real-node test scrapes
// through it, as prometheus-operator's generated config does).
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
)
