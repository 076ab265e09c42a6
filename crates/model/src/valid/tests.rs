//! Unit tests: each check refuses what the proxy cannot build and says why, and accepts what it
//! can.

use super::*;
use crate::names::ServiceKey;
use crate::policy::{FailureAccrual, OutlierDetection, RetryBudget};
use crate::route::{Cors, Destination, DirectResponse, Fault, HeaderMatch, Redirect, Rewrite};

fn to_hello() -> HttpRoute {
    HttpRoute {
        name: "r".into(),
        destinations: vec![Destination::service(ServiceKey::new("hello", "default"), 1)],
        ..HttpRoute::default()
    }
}

#[test]
fn header_names_follow_the_http_crate() {
    for ok in ["x-a", "X-Upper", "a!#$%&'*+-.^_`|~z", "9"] {
        assert!(header_name(ok).is_ok(), "{ok}");
    }
    assert_eq!(header_name("X-Upper").unwrap().as_str(), "x-upper");
    for bad in ["", "bad name", "a:b", "x\r\ny", "naïve", "(x)"] {
        let why = header_name(bad).unwrap_err();
        assert!(why.contains("not an HTTP header name"), "{bad}: {why}");
    }
}

#[test]
fn header_values_hold_no_control_characters() {
    for ok in ["", "one two", "tab\there", "~!@#", "café"] {
        assert!(header_value(ok).is_ok(), "{ok:?}");
    }
    for bad in ["one\r\nx-b: two", "a\nb", "nul\0", "del\x7f"] {
        assert!(header_value(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn methods_regexes_and_authorities() {
    assert!(method("PURGE").is_ok());
    assert!(method("GET ME").is_err());
    assert!(full_regex("/v[0-9]+").unwrap().is_match("/v12"));
    assert!(
        !full_regex("/v[0-9]+").unwrap().is_match("/v12/x"),
        "a full match"
    );
    let why = full_regex("(").unwrap_err();
    assert_eq!(
        why,
        "invalid regex: regex parse error: ( ^ error: unclosed group"
    );
    assert!(regex("^/a(.*)").is_ok());
    assert!(authority("example.com").is_ok());
    assert!(authority("example.com:8443").is_ok());
    assert!(authority("[::1]:80").is_ok());
    for bad in ["", "user@host", "bad host", "h\r\nx"] {
        assert!(authority(bad).is_err(), "{bad:?}");
    }
    assert!(scheme("https").is_ok());
    for bad in ["", "1http", "ht tp", "http\r\n"] {
        assert!(scheme(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn uri_paths() {
    for ok in ["/", "/new", "/a/b?x=1", "/%7E", "/{json}"] {
        assert!(uri_path(ok).is_ok(), "{ok}");
    }
    for bad in ["", "new", "/a b", "/new\r\nSet-Cookie: a=b", "/a#frag"] {
        assert!(uri_path(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn replicas_have_a_ceiling() {
    assert!(replicas(0).is_ok());
    assert!(replicas(MAX_REPLICAS).is_ok());
    let why = replicas(4_294_967_295).unwrap_err();
    assert!(why.contains("at most 64"), "{why}");
}

#[test]
fn routes_are_checked_whole() {
    assert_eq!(route(&to_hello()), Ok(()));
    let check = |edit: fn(&mut HttpRoute)| {
        let mut r = to_hello();
        edit(&mut r);
        route(&r).unwrap_err()
    };
    let why = check(|r| r.request_headers.set.push(("bad name".into(), "x".into())));
    assert!(why.starts_with("request header edit set:"), "{why}");
    let why = check(|r| r.response_headers.add.push(("x-a".into(), "a\r\nb".into())));
    assert!(why.starts_with("response header edit add x-a:"), "{why}");
    let why = check(|r| r.destinations[0].request_headers.remove.push(String::new()));
    assert!(
        why.contains("hello.default: request header edit remove"),
        "{why}"
    );
    let why = check(|r| r.destinations[0].weight = 0);
    assert_eq!(why, "every destination has weight 0");
    let why = check(|r| r.destinations.clear());
    assert_eq!(why, "no destination");
    let why = check(|r| {
        r.matches.push(RouteMatch {
            negated: vec![RouteMatch {
                headers: vec![HeaderMatch {
                    name: "x".into(),
                    value: StringMatch::Regex("[".into()),
                    invert: false,
                }],
                ..RouteMatch::default()
            }],
            ..RouteMatch::default()
        })
    });
    assert!(why.contains("header match x: invalid regex"), "{why}");
    let why = check(|r| {
        r.rewrite = Some(Rewrite {
            path: Some(PathRewrite::Full("v2".into())),
            authority: None,
        })
    });
    assert!(why.contains("must start with /"), "{why}");
    let why = check(|r| {
        r.rewrite = Some(Rewrite {
            path: None,
            authority: Some("bad host".into()),
        })
    });
    assert!(why.starts_with("rewrite authority:"), "{why}");
    let why = check(|r| {
        r.cors = Some(Cors {
            allow_headers: vec!["x-a\n".into()],
            ..Cors::default()
        })
    });
    assert!(why.starts_with("CORS allowHeaders:"), "{why}");
    let why = check(|r| {
        r.fault = Some(Fault {
            abort_status: Some(700),
            ..Fault::default()
        })
    });
    assert!(why.contains("700"), "{why}");
}

#[test]
fn redirects_must_make_a_location() {
    let redirect = |path: &str| HttpRoute {
        destinations: Vec::new(),
        redirect: Some(Redirect {
            scheme: Some("https".into()),
            host: Some("example.com".into()),
            port: None,
            path: Some(PathRewrite::Full(path.into())),
            status: 301,
        }),
        ..to_hello()
    };
    assert_eq!(route(&redirect("/new")), Ok(()));
    let why = route(&redirect("/new\r\nSet-Cookie: a=b")).unwrap_err();
    assert!(
        why.starts_with("redirect:") && why.contains("not a URI path"),
        "{why}"
    );
    let why = route(&redirect("new")).unwrap_err();
    assert!(why.contains("must start with /"), "{why}");
    let mut r = redirect("/new");
    r.redirect.as_mut().unwrap().status = 200;
    assert!(route(&r).unwrap_err().contains("redirect status 200"));
    let mut r = redirect("/new");
    r.redirect.as_mut().unwrap().host = Some("a.example:81".into());
    r.redirect.as_mut().unwrap().port = Some(82);
    assert!(route(&r).unwrap_err().contains("has a port"));
    let direct = HttpRoute {
        destinations: Vec::new(),
        direct_response: Some(DirectResponse {
            status: 99,
            body: String::new(),
        }),
        ..to_hello()
    };
    assert!(route(&direct)
        .unwrap_err()
        .contains("direct response status 99"));
}

#[test]
fn traffic_policies() {
    assert_eq!(traffic_policy(&TrafficPolicy::default()), Ok(()));
    let with = |p: TrafficPolicy| traffic_policy(&p).unwrap_err();
    let why = with(TrafficPolicy {
        consistent_hash: Some(HashOn::Header("bad name".into())),
        ..TrafficPolicy::default()
    });
    assert!(why.starts_with("consistent hash on a header:"), "{why}");
    let why = with(TrafficPolicy {
        consistent_hash: Some(HashOn::Cookie {
            name: "id".into(),
            path: Some("/a;b".into()),
            ttl_s: None,
        }),
        ..TrafficPolicy::default()
    });
    assert!(why.contains("`;`"), "{why}");
    let why = with(TrafficPolicy {
        outlier_detection: Some(OutlierDetection {
            interval_ms: 0,
            ..OutlierDetection::default()
        }),
        ..TrafficPolicy::default()
    });
    assert!(why.contains("interval of 0 ms"), "{why}");
    let why = with(TrafficPolicy {
        failure_accrual: Some(FailureAccrual {
            jitter_ratio: f64::NAN,
            ..FailureAccrual::default()
        }),
        ..TrafficPolicy::default()
    });
    assert!(why.contains("jitter ratio"), "{why}");
    let why = with(TrafficPolicy {
        retry_budget: Some(RetryBudget {
            ratio: 0.2,
            min_per_second: 10,
            ttl_ms: 0,
        }),
        ..TrafficPolicy::default()
    });
    assert!(why.contains("window of 0 ms"), "{why}");
}

#[test]
fn jwt_rules_need_usable_keys_and_header_names() {
    let rule = |jwks: &str| JwtRule {
        issuer: "https://issuer.example".into(),
        audiences: Vec::new(),
        jwks: Some(jwks.into()),
        jwks_uri: None,
        from_headers: Vec::new(),
        from_params: Vec::new(),
        from_cookies: Vec::new(),
        forward_original_token: false,
        output_payload_to_header: None,
        output_claim_to_headers: Vec::new(),
        timeout_ms: None,
    };
    let ed = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
    assert_eq!(jwt_rule(&rule(ed)), Ok(()));
    let why = jwt_rule(&rule(
        r#"{"keys":[{"kty":"EC","crv":"P-999","x":"AAAA","y":"AAAA"}]}"#,
    ))
    .unwrap_err();
    assert!(
        why.starts_with("issuer https://issuer.example: jwks:") && why.contains("P-999"),
        "{why}"
    );
    let mut r = rule(ed);
    r.output_claim_to_headers.push(("x y".into(), "sub".into()));
    assert!(jwt_rule(&r).unwrap_err().contains("outputClaimToHeaders"));
}
