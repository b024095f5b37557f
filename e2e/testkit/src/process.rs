//! Child processes that die with the test: killed by PID on drop, and by the kernel when the
//! test process goes away (`PR_SET_PDEATHSIG`, from a spawner thread that lives as long as the
//! process, because the signal fires when the *thread* that forked exits).

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn thread");
        Mutex::new(tx)
    })
}

/// A running daemon; stopped by PID on drop.
pub struct Daemon {
    name: String,
    child: Option<Child>,
}

impl Daemon {
    /// Start `cmd` with stdout/stderr appended to `log`, in the calling thread's network
    /// namespace (see `netns`: a test thread inside a node starts its daemons in that node).
    pub fn spawn(name: &str, mut cmd: Command, log: &std::path::Path) -> Result<Self> {
        let netns = thread_netns()?;
        if let Some(ns) = &netns {
            let fd = ns.as_raw_fd();
            #[allow(unsafe_code)]
            // SAFETY: setns is async-signal-safe; `fd` stays open until the spawn returns.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        #[allow(unsafe_code)]
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (tx, rx) = mpsc::channel();
        spawner()
            .lock()
            .expect("spawner lock")
            .send((cmd, tx))
            .expect("spawner alive");
        let child = rx
            .recv()
            .expect("spawner replies")
            .with_context(|| format!("starting {name}"))?;
        drop(netns);
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGTERM, then SIGKILL after a grace period; waits for the process.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        #[allow(unsafe_code)]
        // SAFETY: signalling a child we spawned and have not yet reaped, so the PID is ours.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "testkit: {} (pid {pid}) ignored SIGTERM; killing",
            self.name
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGTERM, and the exit status if it exits within `grace` (else killed, and an error).
    pub fn terminate(&mut self, grace: Duration) -> Result<std::process::ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("{} was already stopped", self.name);
        };
        #[allow(unsafe_code)]
        // SAFETY: signalling a child we spawned and have not yet reaped, so the PID is ours.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("{} did not exit within {grace:?} of SIGTERM", self.name)
    }

    /// Kill at once (simulates a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The calling thread's network namespace when it differs from the process's (the spawner
/// thread forks in the process's namespace, so the child must be moved).
fn thread_netns() -> Result<Option<std::fs::File>> {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
    let (thread, process) = (id("/proc/thread-self/ns/net"), id("/proc/self/ns/net"));
    match (thread, process) {
        (Ok(t), Ok(p)) if t != p => Ok(Some(
            std::fs::File::open("/proc/thread-self/ns/net")
                .context("opening this thread's netns")?,
        )),
        _ => Ok(None),
    }
}

/// A free TCP port on 127.0.0.1 (the daemon binds it right after; collisions are retried by callers).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A reading that no pending update will change: `read` polled every `interval` until two
/// readings in a row agree (counters that a transfer still under way moves), within `timeout`.
pub fn settled<T: PartialEq + std::fmt::Debug>(
    what: &str,
    interval: Duration,
    timeout: Duration,
    mut read: impl FnMut() -> T,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut last = read();
    loop {
        std::thread::sleep(interval);
        let now = read();
        if now == last {
            return now;
        }
        assert!(Instant::now() < deadline, "{what} never settled: {now:?}");
        last = now;
    }
}

/// Poll `check` until it returns true; this is readiness polling, not a sleep-as-synchronisation.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    while Instant::now() < deadline {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match last_err {
        Some(e) => bail!("{what} not ready after {timeout:?}: {e:#}"),
        None => bail!("{what} not ready after {timeout:?}"),
    }
}

/// [`wait_until`] for async checks (inside a runtime: polls with a tokio timer).
pub async fn wait_until_async<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    while Instant::now() < deadline {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match last_err {
        Some(e) => bail!("{what} not ready after {timeout:?}: {e:#}"),
        None => bail!("{what} not ready after {timeout:?}"),
    }
}

/// The last 30 lines of a daemon's log, for error messages.
pub(crate) fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
