//! A mirror request resolves at most one candidate: many catalog entries for one repository
//! behind an IPFS daemon that accepts connections and never answers cost one resolve timeout,
//! not one per entry (the agent binary, standalone, with a catalog file).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipfs_oci::content_id::{raw_cid_for_digest, to_base32};
use testkit::Agent;

const ENTRIES: usize = 4;
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

/// An "IPFS API" on 127.0.0.1 that accepts every connection, counts it, and never answers.
struct StalledIpfs {
    url: String,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StalledIpfs {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopping) = (connections.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let held: Mutex<Vec<TcpStream>> = Mutex::new(Vec::new());
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        held.lock().unwrap().push(s);
                    }
                    // Polling a non-blocking accept, so the thread can be stopped.
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            url,
            connections,
            stop,
            thread: Some(thread),
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for StalledIpfs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn digest(i: usize) -> String {
    format!("sha256:{i:064x}")
}

#[test]
fn many_candidates_for_one_repository_cost_one_resolve_timeout() {
    let ipfs = StalledIpfs::start();
    // ENTRIES imports of one tag (as re-imports over time leave them) and one by digest.
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("images.yaml");
    let mut file = std::fs::File::create(&catalog).unwrap();
    for i in 0..ENTRIES {
        let cid = to_base32(&raw_cid_for_digest(&digest(i + 1).parse().unwrap()));
        writeln!(file, "- source: registry.test/app:1\n  cid: {cid}").unwrap();
    }
    drop(file);
    let agent = Agent::start(
        &PathBuf::from(env!("CARGO_BIN_EXE_ipfs-image-agent")),
        &ipfs.url,
        Some(&catalog),
        // RPC only, and no repository gauges: asking a stalled daemon for its gateway or its
        // size would count as a connection.
        &[
            "--resolve-timeout",
            "1s",
            "--ipfs-gateway",
            "rpc",
            "--repo-stat-interval",
            "0s",
        ],
    )
    .unwrap();
    assert_eq!(ipfs.connections(), 0, "nothing resolved before a request");
    // The catalog's registry has its series before its first request (a counter born at its
    // first increment shows no rate for it).
    let before = agent.metrics();
    for series in [
        r#"ipfs_image_agent_mirror_requests_total{registry="registry.test",result="hit"} 0"#,
        r#"ipfs_image_agent_mirror_fallbacks_total{cause="ipfs_timeout",registry="registry.test"} 0"#,
    ] {
        assert!(before.lines().any(|l| l == series), "{series}\n{before}");
    }

    let http = testkit::http_client(Duration::from_secs(30));
    let mut seen = 0;
    for path in [
        "manifests/1".to_owned(),
        format!("manifests/{}", digest(99)),
    ] {
        let url = format!("http://{}/v2/app/{path}?ns=registry.test", agent.addr);
        let started = Instant::now();
        let status = http.head(&url).send().unwrap().status().as_u16();
        let took = started.elapsed();
        // A miss containerd falls back on, after one resolve timeout (plus slack), not four.
        assert_eq!(status, 404, "{path}\n{}", agent.log());
        assert!(
            took >= RESOLVE_TIMEOUT && took < RESOLVE_TIMEOUT * 2,
            "{path} took {took:?} for {ENTRIES} candidates\n{}",
            agent.log()
        );
        let now = ipfs.connections();
        assert_eq!(now - seen, 1, "{path}: one resolve, one IPFS request");
        seen = now;
    }
    // Each fallback is counted with its cause, by registry; a repository nobody holds is a miss.
    let fallbacks = |cause: &str| {
        agent.metric_sum(
            "ipfs_image_agent_mirror_fallbacks_total",
            &[("registry", "registry.test"), ("cause", cause)],
        )
    };
    assert_eq!(fallbacks("ipfs_timeout"), 2.0, "{}", agent.metrics());
    assert_eq!(fallbacks("miss"), 0.0);
    let url = format!(
        "http://{}/v2/other/manifests/1?ns=registry.test",
        agent.addr
    );
    assert_eq!(http.head(&url).send().unwrap().status().as_u16(), 404);
    assert_eq!(fallbacks("miss"), 1.0, "{}", agent.metrics());
    assert_eq!(
        agent.metric_sum(
            "ipfs_image_agent_mirror_requests_total",
            &[("registry", "registry.test"), ("result", "miss")]
        ),
        3.0,
        "the hit/miss counter agrees"
    );
}
