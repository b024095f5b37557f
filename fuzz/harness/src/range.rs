//! `Range` headers of blob requests against a blob size.

use ipfs_image_agent::registry::range::{RangeRequest, parse};

/// Input: the blob size in decimal on the first line, the header value after it
/// (`1048576\nbytes=0-1023`). Without a number the size comes from the input's length.
pub fn range_header(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let (size, header) = match text.split_once('\n') {
        Some((n, h)) => (n.trim().parse::<u64>().unwrap_or(data.len() as u64), h),
        None => (data.len() as u64, text),
    };
    for size in [size, 0, 1, u64::MAX] {
        check(parse(Some(header), size), header, size);
    }
    assert_eq!(parse(None, size), RangeRequest::Whole);
}

fn check(request: RangeRequest, header: &str, size: u64) {
    let RangeRequest::Partial(span) = request else {
        return;
    };
    // A span is non-empty and inside the blob, so `blob_response` can slice and write
    // `Content-Range: bytes start-(start+len-1)/size` without overflow.
    assert!(span.len > 0, "{header:?} on {size}: empty span");
    let end = span
        .start
        .checked_add(span.len)
        .unwrap_or_else(|| panic!("{header:?} on {size}: span overflows"));
    assert!(end <= size, "{header:?} on {size}: {span:?} past the end");
    // The span written as a header means the same span.
    let again = parse(Some(&format!("bytes={}-{}", span.start, end - 1)), size);
    assert_eq!(again, RangeRequest::Partial(span), "{header:?} on {size}");
}
