//! The IpfsImage controller as a library, so that integration tests drive the same reconcile
//! code the `ipfs-image-operator run` binary runs.

pub mod controller;
