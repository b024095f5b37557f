//! Named fault points, for the crash tests only.
//!
//! Built with the `failpoints` feature, a binary reads `FAILPOINTS` (the `fail` crate's syntax,
//! e.g. `convert::blob_stored=2*off->pause`) at start. A test then waits for a point's log line
//! and kills the process there with SIGKILL, to prove that what a crash leaves behind is resumed.
//! Without the feature every point compiles to nothing and `FAILPOINTS` is ignored.

/// Read `FAILPOINTS` once, at the start of a binary.
pub fn setup() {
    #[cfg(feature = "failpoints")]
    {
        // The scenario's guard only serialises test scenarios of one process; this one lives
        // as long as the process.
        std::mem::forget(fail::FailScenario::setup());
        tracing::warn!("built with fault points (--features failpoints): not for production");
    }
}

/// The point `name` is reached: log it, then do what `FAILPOINTS` says (pause, sleep, …).
#[inline]
pub fn point(name: &'static str) {
    #[cfg(feature = "failpoints")]
    {
        tracing::info!(point = name, "fault point reached");
        fail::fail_point!(name);
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
