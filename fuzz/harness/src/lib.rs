//! Fuzz targets for every parser that sees outside input, one `pub fn <target>(&[u8])` each.
//!
//! cargo-fuzz (`fuzz/fuzz_targets/<target>.rs`) calls them under libFuzzer; `tests/replay.rs`
//! runs them over the checked-in corpus and regressions on stable, in CI. A target panics only
//! when the code under test panics or breaks one of the invariants asserted here (round trips,
//! bounds), which is what a fuzzer reports as a crash.

mod catalog;
mod digest;
mod docker_config;
mod estargz;
mod manifest;
mod memory_store;
mod peer;
mod range;
mod reference;
mod resolve;
mod route;

pub use catalog::catalog_file;
pub use digest::digest_cid;
pub use docker_config::docker_config;
pub use estargz::estargz_tar;
pub use manifest::manifest_json;
pub use peer::peer_annotation;
pub use range::range_header;
pub use reference::image_reference;
pub use resolve::resolve_dag;
pub use route::registry_route;

/// A fuzz target: any bytes in, a panic only for a bug.
pub type Target = fn(&[u8]);

/// Every target by name: the replay test and the fuzz script agree on these names.
pub const TARGETS: &[(&str, Target)] = &[
    ("registry_route", registry_route),
    ("range_header", range_header),
    ("image_reference", image_reference),
    ("digest_cid", digest_cid),
    ("manifest_json", manifest_json),
    ("resolve_dag", resolve_dag),
    ("estargz_tar", estargz_tar),
    ("catalog_file", catalog_file),
    ("peer_annotation", peer_annotation),
    ("docker_config", docker_config),
];

/// The input as text: every parser here takes `&str` (HTTP has already checked it is text, or
/// the file is read as UTF-8), so other bytes never reach it.
fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}
