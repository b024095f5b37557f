//! Logging set-up: the shared one, through a writer that keeps `convert`'s progress bars intact.

use std::io::Write;
use std::sync::OnceLock;

use indicatif::MultiProgress;
use ipfs_image_process::LogFormat;

/// Logs go to stderr so stdout stays machine-readable (`convert` prints the CID there), above
/// any progress bars.
pub fn init(format: LogFormat) {
    ipfs_image_process::logging::init(format, || LogWriter);
}

/// Progress bars on stderr (see `convert_progress`): log lines are printed above them.
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// From now on, log lines are written above `bars` instead of through them.
pub fn log_above(bars: MultiProgress) {
    let _ = BARS.set(bars);
}

/// stderr, with live progress bars moved out of the way of each line.
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match BARS.get() {
            Some(bars) => bars.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
