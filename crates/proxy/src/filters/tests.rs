//! Unit tests: route filters.

use super::*;

#[test]
fn prefix_replacement_keeps_one_slash() {
    assert_eq!(
        replace_prefix("/prefix/one/two", "/prefix/one", "/one"),
        "/one/two"
    );
    assert_eq!(
        replace_prefix("/strip-prefix/three", "/strip-prefix", "/"),
        "/three"
    );
    assert_eq!(replace_prefix("/strip-prefix", "/strip-prefix", "/"), "/");
    assert_eq!(replace_prefix("/reviews/1", "/reviews/", "/"), "/1");
    assert_eq!(replace_prefix("/a/b", "/a", ""), "/b");
    assert_eq!(replace_prefix("/a", "/a", ""), "/");
}

#[test]
fn rewrites_keep_the_query() {
    let w = RewriteOp::compile(
        &Rewrite {
            path: Some(PathRewrite::Prefix("/v2".into())),
            authority: Some("other".into()),
        },
        "r",
    )
    .unwrap();
    assert_eq!(w.path_and_query("/v1/x?a=1", Some("/v1")), "/v2/x?a=1");
    assert_eq!(w.authority.as_deref(), Some("other"));
    let re = RewriteOp::compile(
        &Rewrite {
            path: Some(PathRewrite::Regex {
                pattern: "^/service/([^/]+)(/.*)$".into(),
                substitution: "\\2/instance/\\1".into(),
            }),
            authority: None,
        },
        "r",
    )
    .unwrap();
    assert_eq!(
        re.path_and_query("/service/foo/v1/api", None),
        "/v1/api/instance/foo"
    );
}

#[test]
fn header_edits_remove_set_add_in_order() {
    let ops = HeaderOps::compile(
        &HeaderEdits {
            set: vec![("X-Set".into(), "1".into())],
            add: vec![("x-add".into(), "2".into())],
            remove: vec!["X-Gone".into()],
        },
        "r",
    )
    .unwrap();
    let mut h = HeaderMap::new();
    h.insert("x-set", HeaderValue::from_static("old"));
    h.insert("x-add", HeaderValue::from_static("first"));
    h.insert("x-gone", HeaderValue::from_static("bye"));
    ops.apply(&mut h);
    assert_eq!(h["x-set"], "1");
    assert_eq!(h.get_all("x-add").iter().count(), 2);
    assert!(!h.contains_key("x-gone"));
    assert!(HeaderOps::compile(
        &HeaderEdits {
            set: vec![("bad header".into(), "v".into())],
            ..Default::default()
        },
        "r"
    )
    .is_err());
}

#[test]
fn redirects_build_the_location() {
    let r = |redirect: Redirect| RedirectOp::compile(&redirect, "r").unwrap();
    let plain = Redirect {
        scheme: None,
        host: Some("example.org".into()),
        port: None,
        path: None,
        status: 301,
    };
    let rsp = r(plain.clone()).respond("http", "foo:8080", "/a?b=1", None);
    assert_eq!(rsp.status(), 301);
    assert_eq!(rsp.headers()["location"], "http://example.org:8080/a?b=1");
    let https = Redirect {
        scheme: Some("https".into()),
        status: 302,
        ..plain.clone()
    };
    let rsp = r(https).respond("http", "foo:8080", "/a", None);
    assert_eq!(rsp.headers()["location"], "https://example.org/a");
    let path = Redirect {
        path: Some(PathRewrite::Prefix("/new".into())),
        port: Some(80),
        ..plain
    };
    let rsp = r(path).respond("http", "foo", "/old/x", Some("/old"));
    assert_eq!(rsp.headers()["location"], "http://example.org/new/x");
    assert!(RedirectOp::compile(
        &Redirect {
            scheme: None,
            host: None,
            port: None,
            path: None,
            status: 200
        },
        "r"
    )
    .is_err());
}

#[test]
fn cors_answers_preflights_for_allowed_origins_only() {
    let c = CorsOp::compile(
        &Cors {
            allow_origins: vec![StringMatch::Exact("https://a.example".into())],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["x-custom".into()],
            expose_headers: vec!["x-exposed".into()],
            max_age_s: Some(600),
            allow_credentials: true,
        },
        "r",
    )
    .unwrap();
    let mut req = HeaderMap::new();
    req.insert(
        header::ORIGIN,
        HeaderValue::from_static("https://a.example"),
    );
    req.insert(
        header::ACCESS_CONTROL_REQUEST_METHOD,
        HeaderValue::from_static("POST"),
    );
    let rsp = c.preflight(&Method::OPTIONS, &req).unwrap();
    assert_eq!(
        rsp.headers()["access-control-allow-origin"],
        "https://a.example"
    );
    assert_eq!(rsp.headers()["access-control-allow-methods"], "GET,POST");
    assert_eq!(rsp.headers()["access-control-max-age"], "600");
    assert!(c.preflight(&Method::GET, &req).is_none());
    let mut other = req.clone();
    other.insert(
        header::ORIGIN,
        HeaderValue::from_static("https://evil.example"),
    );
    assert!(
        c.preflight(&Method::OPTIONS, &other).is_none(),
        "a preflight from a disallowed origin is the app's to answer"
    );
    let mut out = HeaderMap::new();
    c.decorate(&req, &mut out);
    assert_eq!(out["access-control-expose-headers"], "x-exposed");
    assert_eq!(out["access-control-allow-credentials"], "true");
}
