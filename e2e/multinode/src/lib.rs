//! Empty: this crate holds the multi-node test (`tests/multinode.rs`).
