//go:build tools

// Package tools pins Toxiproxy, the fault-injecting TCP proxy the reliability suite puts
// between a component and MinIO (tests/reliability/faults.py).
package tools

import (
	_ "github.com/Shopify/toxiproxy/v2/cmd/cli"
	_ "github.com/Shopify/toxiproxy/v2/cmd/server"
)
