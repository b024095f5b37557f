//! The runtime configuration files the agent writes (hosts.toml, registries.conf.d drop-in):
//! each starts with a marker line, by which `cleanup` knows it as ours, and is replaced whole.

use std::path::Path;

/// Write `contents` to `file` through a temporary file and a rename, so the runtime never reads
/// half a file.
pub fn write_atomically(file: &Path, contents: &str) -> std::io::Result<()> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = file.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, file)
}

/// True when `file` exists and its first line is `marker` (a file the agent wrote).
pub fn has_marker(file: &Path, marker: &str) -> bool {
    std::fs::read_to_string(file)
        .map(|s| s.starts_with(marker))
        .unwrap_or(false)
}
