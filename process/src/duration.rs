//! Duration flags as Kubernetes writes them (Go's `time.ParseDuration`: `90s`, `1h30m`, `1.5h`),
//! the same in both binaries and in the chart's values.

use std::time::Duration;

/// A `value_parser` for clap: a non-negative Go-style duration.
pub fn parse(text: &str) -> Result<Duration, String> {
    let parsed: kube::core::Duration = text.parse().map_err(|e| format!("{e}"))?;
    if parsed.is_negative() {
        return Err("must not be negative".into());
    }
    Ok(Duration::from(parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_and_negative_ones_do_not() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse("-1s").is_err());
        assert!(parse("10").is_err(), "a unit is required");
        assert!(parse("ten seconds").is_err());
    }
}
