//go:build tools

// Package tools pins Prometheus and promtool: the local metrics server of the dev services and
// the tests, and the alert-rule test runner.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
