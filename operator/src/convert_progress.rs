//! What `convert` shows while it works, on stderr: a bar per blob and one for the whole image
//! on a terminal (as `nerdctl pull` does), one plain line per step otherwise (logs, CI).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use ipfs_image_api::human_size;
use ipfs_oci::digest::Digest;
use ipfs_oci::progress::{ConvertProgress, ProgressSink};

/// Bars when stderr is a terminal, plain lines when it is not.
pub fn for_stderr() -> ProgressSink {
    if std::io::stderr().is_terminal() {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        crate::telemetry::log_above(multi.clone());
        ProgressSink::new(Bars::new(multi))
    } else {
        ProgressSink::new(Lines::default())
    }
}

/// A short name for a blob: the first 12 hex digits, as `docker pull` shows them.
fn short(digest: &Digest) -> String {
    digest.hex().chars().take(12).collect()
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    blobs: Mutex<BarState>,
}

#[derive(Default)]
struct BarState {
    bars: HashMap<Digest, ProgressBar>,
    started: usize,
    done: usize,
}

impl Bars {
    fn new(multi: MultiProgress) -> Self {
        let total = multi.add(ProgressBar::new(0));
        total.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        total.set_prefix("total");
        Self {
            multi,
            total,
            blobs: Mutex::new(BarState::default()),
        }
    }

    fn blob_bar(&self, digest: &Digest, size: u64) -> ProgressBar {
        // Above the total, which stays the last line.
        let bar = self
            .multi
            .insert_before(&self.total, ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(short(digest));
        bar
    }

    fn count(&self, state: &BarState) {
        self.total
            .set_message(format!("{}/{} blobs", state.done, state.started));
    }
}

impl ConvertProgress for Bars {
    fn blob_started(&self, digest: &Digest, size: u64) {
        let mut state = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        match state.bars.get(digest) {
            // Downloaded again (an eStargz conversion that fell back): count its bytes once.
            Some(bar) => {
                self.total
                    .set_position(self.total.position().saturating_sub(bar.position()));
                bar.reset();
            }
            None => {
                let bar = self.blob_bar(digest, size);
                state.bars.insert(*digest, bar);
                state.started += 1;
                self.total.inc_length(size);
            }
        }
        self.count(&state);
    }

    fn blob_progress(&self, digest: &Digest, bytes: u64) {
        let state = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bar) = state.bars.get(digest) {
            bar.inc(bytes);
        }
        self.total.inc(bytes);
    }

    fn blob_done(&self, digest: &Digest, size: u64, reused: bool) {
        let mut state = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        if reused {
            let bar = self.blob_bar(digest, size);
            bar.set_position(size);
            state.bars.insert(*digest, bar);
            state.started += 1;
            self.total.inc_length(size);
            self.total.inc(size);
        }
        state.done += 1;
        if let Some(bar) = state.bars.get(digest) {
            bar.finish_with_message(if reused { "already stored" } else { "stored" });
        }
        self.count(&state);
    }

    fn finished(&self) {
        let state = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        self.total
            .finish_with_message(format!("{}/{} blobs", state.done, state.started));
        // The cursor stays at the end of the last bar: what comes next (the CID on stdout)
        // starts a line of its own.
        eprintln!();
    }
}

/// One line when a blob starts and one when it is stored, with the running totals.
struct Lines {
    began: Instant,
    state: Mutex<LineState>,
}

impl Default for Lines {
    fn default() -> Self {
        Self {
            began: Instant::now(),
            state: Mutex::default(),
        }
    }
}

#[derive(Default)]
struct LineState {
    started_at: HashMap<Digest, Instant>,
    blobs_started: usize,
    blobs_done: usize,
    bytes_started: u64,
    bytes_done: u64,
}

impl ConvertProgress for Lines {
    fn blob_started(&self, digest: &Digest, size: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.started_at.insert(*digest, Instant::now()).is_none() {
            s.blobs_started += 1;
            s.bytes_started += size;
        }
        eprintln!("{} downloading ({})", short(digest), human_size(size));
    }

    fn blob_progress(&self, _digest: &Digest, _bytes: u64) {}

    fn blob_done(&self, digest: &Digest, size: u64, reused: bool) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let took = s.started_at.get(digest).map(Instant::elapsed);
        if reused {
            s.blobs_started += 1;
            s.bytes_started += size;
        }
        s.blobs_done += 1;
        s.bytes_done += size;
        let what = match (reused, took) {
            (true, _) | (false, None) => "already stored".to_owned(),
            (false, Some(t)) => format!("stored in {:.1}s", t.as_secs_f64()),
        };
        eprintln!(
            "{} {what} ({}); {}/{} blobs, {} of {}",
            short(digest),
            human_size(size),
            s.blobs_done,
            s.blobs_started,
            human_size(s.bytes_done),
            human_size(s.bytes_started),
        );
    }

    fn finished(&self) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        eprintln!(
            "total: {} blobs, {} in {:.1}s",
            s.blobs_done,
            human_size(s.bytes_done),
            self.began.elapsed().as_secs_f64()
        );
    }
}
