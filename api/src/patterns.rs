//! Regular expressions the CRD schema enforces, shared so tests and callers check the same thing.
//!
//! They are written in the subset that both Kubernetes (Go RE2) and ECMA-262 engines accept,
//! because the apiserver and client-side JSON-schema validators both evaluate them.

/// A CID as users paste it: base32 CIDv1 (`bafy…`/`bafk…`, lower case) or base58 CIDv0 (`Qm…`).
///
/// Only the text shape is checked here; the controller still parses the CID (multibase,
/// multicodec, multihash) and reports `InvalidReference` for anything the pattern lets through.
pub const CID: &str = "^(b[a-z2-7]{20,}|Qm[1-9A-HJ-NP-Za-km-z]{44})$";

/// An OCI platform: `os/arch` or `os/arch/variant` (e.g. `linux/amd64`, `linux/arm64/v8`).
pub const PLATFORM: &str = "^[a-z0-9_.-]+/[a-z0-9_.-]+(/[a-z0-9_.-]+)?$";

/// A Go/Kubernetes duration with units (`90s`, `10m`, `1h30m`); a bare number is rejected
/// because it is ambiguous to readers.
pub const DURATION: &str = "^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// An image reference has no whitespace; the real grammar is checked by the controller so that
/// a bad reference becomes a readable `InvalidReference` condition rather than a terse 422.
pub const IMAGE_REFERENCE: &str = "^\\S+$";

/// A Kubernetes object name (RFC 1123 subdomain), as used for Secret names.
pub const DNS_SUBDOMAIN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
