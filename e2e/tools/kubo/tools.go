//go:build tools

// Package tools pins Kubo for e2e/deps.sh, which builds its `ipfs` command from this module.
package tools

import _ "github.com/ipfs/kubo/cmd/ipfs"
