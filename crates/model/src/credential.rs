//! The admin credential the control plane's API and the proxies' `/tap` and `/shutdown` ask
//! for: `Authorization: Bearer TOKEN`, compared in time independent of where it differs.

/// What a request presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presented {
    /// No `Authorization: Bearer` at all (answer 401).
    Nothing,
    /// Another credential (answer 403).
    Wrong,
    Right,
}

/// Checks an `Authorization` header value against `token`.
pub fn check(authorization: Option<&str>, token: &str) -> Presented {
    match authorization.and_then(|v| v.strip_prefix("Bearer ")) {
        None => Presented::Nothing,
        Some(given) if same_secret(given.trim().as_bytes(), token.as_bytes()) => Presented::Right,
        Some(_) => Presented::Wrong,
    }
}

/// Equal in time independent of where two secrets differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    //! Unit tests: what counts as presenting the credential.
    use super::*;

    #[test]
    fn only_the_bearer_token_itself_passes() {
        assert_eq!(check(None, "s3cret"), Presented::Nothing);
        assert_eq!(check(Some("Basic s3cret"), "s3cret"), Presented::Nothing);
        assert_eq!(check(Some("Bearer s3cre"), "s3cret"), Presented::Wrong);
        assert_eq!(check(Some("Bearer s3cret!"), "s3cret"), Presented::Wrong);
        assert_eq!(check(Some("Bearer s3cret"), "s3cret"), Presented::Right);
    }
}
