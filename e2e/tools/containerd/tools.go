//go:build tools

// Package tools pins containerd 2.x for e2e/deps.sh, which builds the `containerd`, `ctr` and
// `containerd-shim-runc-v2` commands from this module.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
