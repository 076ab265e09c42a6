//! Regular expressions written in routes (Istio `regex` matches and `uriRegexRewrite`, Gateway
//! API `RegularExpression` matches, Linkerd `pathRegex`): checked by compiling them as the proxy
//! does (`model::valid::regex`), with the regex crate's error on one line.

/// Why `pattern` does not compile (`invalid regex: …`), or `None` when it does.
pub(crate) fn error(pattern: &str) -> Option<String> {
    model::valid::regex(pattern).err()
}
