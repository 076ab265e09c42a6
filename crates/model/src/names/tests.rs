//! Unit tests: service-name forms and authorities.

use super::*;

fn key(s: &str) -> Option<ServiceKey> {
    Authority::parse(s).service_key("default")
}

#[test]
fn service_name_forms_are_one_service() {
    let want = Some(ServiceKey::new("reviews", "default"));
    for host in [
        "reviews",
        "reviews:9080",
        "reviews.default",
        "reviews.default:9080",
        "reviews.default.svc",
        "reviews.default.svc.cluster.local",
        "reviews.default.svc.cluster.local:9080",
        "REVIEWS.default.svc.cluster.local.",
    ] {
        assert_eq!(key(host), want, "{host}");
    }
    assert_eq!(
        key("reviews.shop"),
        Some(ServiceKey::new("reviews", "shop"))
    );
}

#[test]
fn non_service_hosts_have_no_key() {
    assert_eq!(key("127.0.0.1:8080"), None);
    assert_eq!(key("[::1]:80"), None);
    assert_eq!(key("example.com.au.x.y"), None);
    assert_eq!(key("a.b.svc.other.domain"), None);
}

#[test]
fn authority_ports() {
    assert_eq!(Authority::parse("a:80").port, Some(80));
    assert_eq!(Authority::parse("a").port, None);
    assert_eq!(Authority::parse("a:x").host, "a:x");
    assert_eq!(Authority::parse("[::1]:81").port, Some(81));
}

#[test]
fn spiffe_identity() {
    assert_eq!(
        Identity::spiffe("default", "hello").0,
        "spiffe://cluster.local/ns/default/sa/hello"
    );
}
