//! Single byte ranges (`Range: bytes=a-b`, `bytes=a-`, `bytes=-n`) for blob requests, which
//! stargz-snapshotter uses to lazy-pull. Multiple ranges are answered with the whole blob.

/// A satisfiable range: first byte and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSpan {
    pub start: u64,
    pub len: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable Range header: send everything with 200.
    Whole,
    Partial(ByteSpan),
    /// Syntactically a range, but outside the blob: 416.
    Unsatisfiable,
}

pub fn parse(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeRequest::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| {
        if s.is_empty() || s.len() > 20 {
            None
        } else {
            s.parse::<u64>().ok()
        }
    };
    match (a.is_empty(), b.is_empty()) {
        (true, true) => RangeRequest::Whole,
        // suffix: the last n bytes
        (true, false) => match num(b) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(n) if size > 0 => {
                let n = n.min(size);
                RangeRequest::Partial(ByteSpan {
                    start: size - n,
                    len: n,
                })
            }
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Whole,
        },
        (false, _) => {
            let Some(start) = num(a) else {
                return RangeRequest::Whole;
            };
            if start >= size {
                return RangeRequest::Unsatisfiable;
            }
            let end = if b.is_empty() {
                size - 1
            } else {
                match num(b) {
                    Some(end) if end >= start => end.min(size - 1),
                    Some(_) => return RangeRequest::Whole, // invalid per RFC 9110: ignore the header
                    None => return RangeRequest::Whole,
                }
            };
            RangeRequest::Partial(ByteSpan {
                start,
                len: end - start + 1,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let p = |s, l| RangeRequest::Partial(ByteSpan { start: s, len: l });
        assert_eq!(parse(None, 100), RangeRequest::Whole);
        assert_eq!(parse(Some("bytes=0-9"), 100), p(0, 10));
        assert_eq!(parse(Some("bytes=90-"), 100), p(90, 10));
        assert_eq!(parse(Some("bytes=-10"), 100), p(90, 10));
        assert_eq!(parse(Some("bytes=-1000"), 100), p(0, 100));
        assert_eq!(parse(Some("bytes=50-1000"), 100), p(50, 50));
        assert_eq!(parse(Some("bytes=100-"), 100), RangeRequest::Unsatisfiable);
        assert_eq!(
            parse(Some("bytes=99999999999999999999999-"), 100),
            RangeRequest::Whole
        );
        assert_eq!(parse(Some("bytes=5-1"), 100), RangeRequest::Whole);
        assert_eq!(parse(Some("bytes=0-1,5-6"), 100), RangeRequest::Whole);
        assert_eq!(parse(Some("items=0-1"), 100), RangeRequest::Whole);
        assert_eq!(parse(Some("bytes=-0"), 100), RangeRequest::Unsatisfiable);
    }
}
