//! `ipfs-image-operator convert`'s progress, with a real registry and Kubo: bars on a
//! pseudo-terminal (util-linux `script` gives the command one), plain lines through a pipe, and
//! the CID as the last line of stdout either way.

use std::path::PathBuf;
use std::process::Command;

use testkit::{IpfsDaemon, registry_with_busybox};

fn operator() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipfs-image-operator"))
}

fn convert_args(ipfs: &IpfsDaemon, image: &str) -> Vec<String> {
    [
        "--ipfs-api",
        &ipfs.api_url,
        "convert",
        "--plain-http",
        image,
    ]
    .map(String::from)
    .to_vec()
}

/// The config and the layers of `repo:tag`: the blobs `convert` reports.
fn blob_count(registry: &str, repo: &str, tag: &str) -> usize {
    let manifest = testkit::oci_manifest(registry, repo, tag);
    1 + manifest["layers"].as_array().unwrap().len()
}

/// Text without ANSI escape sequences and carriage returns (what a terminal ends up showing).
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

fn is_cid(line: &str) -> bool {
    line.starts_with('b') && ipfs_oci::content_id::parse_cid(line).is_ok()
}

#[test]
fn through_a_pipe_it_prints_plain_lines_and_the_cid_last() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = registry_with_busybox(dir.path()).unwrap();
    let ipfs = IpfsDaemon::start().unwrap();
    let blobs = blob_count(&registry.addr, "test/busybox", "1");
    let image = format!("{}/test/busybox:1", registry.addr);
    let out = Command::new(operator())
        .args(convert_args(&ipfs, &image))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        is_cid(last),
        "the last line of stdout is the CID: {stdout:?}"
    );
    assert_eq!(
        stdout.lines().count(),
        1,
        "stdout holds the CID only: {stdout:?}"
    );
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\r'),
        "no terminal control through a pipe: {stderr:?}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    let downloading = lines
        .iter()
        .filter(|l| l.contains(" downloading ("))
        .count();
    let stored: Vec<&&str> = lines.iter().filter(|l| l.contains(" stored in ")).collect();
    assert_eq!(
        downloading, blobs,
        "one line per blob as it starts:\n{stderr}"
    );
    assert_eq!(
        stored.len(),
        blobs,
        "one line per blob as it is stored:\n{stderr}"
    );
    assert!(
        stored
            .last()
            .unwrap()
            .contains(&format!("{blobs}/{blobs} blobs")),
        "the running total reaches every blob:\n{stderr}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with(&format!("total: {blobs} blobs, ")),
        "a closing total:\n{stderr}"
    );

    // Again: every blob is in Kubo already, and the CID is the same.
    let again = Command::new(operator())
        .args(convert_args(&ipfs, &image))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), last);
}

#[test]
fn on_a_terminal_it_draws_progress_bars_and_the_cid_last() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = registry_with_busybox(dir.path()).unwrap();
    let ipfs = IpfsDaemon::start().unwrap();
    let blobs = blob_count(&registry.addr, "test/busybox", "1");
    let image = format!("{}/test/busybox:1", registry.addr);
    // script(1) runs the command on a new pseudo-terminal and copies what it shows to stdout.
    let command_line = std::iter::once(operator().display().to_string())
        .chain(convert_args(&ipfs, &image))
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args([
            "--quiet",
            "--return",
            "--command",
            &command_line,
            "/dev/null",
        ])
        .env("TERM", "xterm-256color")
        .env("RUST_LOG", "warn")
        .output()
        .expect("script(1) from util-linux runs the command on a pseudo-terminal");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{shown}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        shown.contains("\x1b["),
        "bars are drawn with terminal control sequences: {shown:?}"
    );
    let screen = plain(&shown);
    assert!(
        screen.contains("total") && screen.contains(&format!("{blobs}/{blobs} blobs")),
        "a total bar that reaches every blob:\n{screen}"
    );
    assert!(
        screen.matches("] ").count() > blobs,
        "a bar per blob and the total:\n{screen}"
    );
    assert!(
        !screen.contains(" downloading ("),
        "no plain lines on a terminal:\n{screen}"
    );
    let last = screen
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap();
    assert!(is_cid(last), "the CID is the last line shown:\n{screen}");
}
