//! Request paths as Istio's authorization compares them.

use std::borrow::Cow;

/// A path Istio refuses (`%00`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the path contains %00")]
pub struct InvalidPath;

/// Normalises a request target as Istio's default (`BASE` + `MERGE_SLASHES`) before matching
/// `paths`: the query is dropped, percent-encoded unreserved characters are decoded (other
/// escapes keep their byte, hex in upper case; `%2F` stays encoded), `\` becomes `/`, `.` and `..`
/// segments are resolved (RFC 3986 §5.2.4) and repeated slashes merged. `%00` is refused.
pub fn normalize_path(target: &str) -> Result<Cow<'_, str>, InvalidPath> {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let path = path.split_once('#').map_or(path, |(p, _)| p);
    let clean = path.starts_with('/')
        && !path.contains(['%', '\\'])
        && !path.contains("//")
        && !path.split('/').any(|s| s == "." || s == "..");
    if clean {
        return Ok(Cow::Borrowed(path));
    }
    // Percent-decoding of unreserved characters, and `\` → `/`.
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len() + 1);
    if !path.starts_with(['/', '\\']) {
        decoded.push(b'/');
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = |j: usize| bytes.get(j).and_then(|c| (*c as char).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                let c = (h * 16 + l) as u8;
                if c == 0 {
                    return Err(InvalidPath);
                }
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(c);
                } else {
                    const HEX: &[u8; 16] = b"0123456789ABCDEF";
                    decoded.extend([b'%', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
                }
                i += 3;
                continue;
            }
            (b'\\', _, _) => decoded.push(b'/'),
            _ => decoded.push(b),
        }
        i += 1;
    }
    let decoded = String::from_utf8(decoded).map_err(|_| InvalidPath)?;
    // Dot segments.
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, s) in segments.into_iter().enumerate() {
        match s {
            "." | ".." => {
                if s == ".." {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    // Merged slashes: empty segments go, except a trailing one.
    let n = out.len();
    let mut result = String::with_capacity(decoded.len());
    for (i, s) in out.into_iter().enumerate() {
        if s.is_empty() && i + 1 != n {
            continue;
        }
        result.push('/');
        result.push_str(s);
    }
    if result.is_empty() {
        result.push('/');
    }
    Ok(Cow::Owned(result))
}
