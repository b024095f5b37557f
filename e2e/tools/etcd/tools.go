//go:build tools

// Package tools pins etcd for e2e/deps.sh, which builds the `etcd` and `etcdctl` commands from this
// module.
package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/server/v3"
)
