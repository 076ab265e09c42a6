//! `authz_paths`: inbound authorization on fuzzed paths and fuzzed rules ([`proxy::authz`]):
//! Istio `paths` / `notPaths` entries (exact, `prefix*`, `*suffix`, `*`, and the `{*}` / `{**}`
//! URI templates), `hosts`, `methods` and `when` conditions, Linkerd Server routes (path
//! matches, regular expressions included), and the path normalisation before them.
//!
//! The input is text, one item a line: the request target, its host, its method, then rule
//! entries, each a tag character and a value:
//! `p` path, `!` notPath, `h` host, `H` notHost, `m` method, `w` condition (`KEY=VALUE`), and for
//! a Linkerd route `e` exact path, `b` path prefix, `s` segment prefix, `r` path regex.
//!
//! Besides "no panic": the normalised path is absolute and normalising it again changes
//! nothing, and the same Istio rule set used as ALLOW and as DENY never both lets a request in.

use http::{HeaderMap, HeaderValue, Method};
use model::route::{PathMatch, RouteMatch};
use model::security::{
    AuthzAction, AuthzPolicy, AuthzRule, Condition, DefaultPolicy, LinkerdServer, Operation, Scope,
    SecuritySpec,
};
use model::{Identity, Labels};
use proxy::authz::{
    normalize_path, Authorizer, AuthzStats, HttpAttributes, RequestContext, Workload,
};
use std::sync::OnceLock;

const PORT: u16 = 8000;

fn stats() -> &'static AuthzStats {
    static S: OnceLock<AuthzStats> = OnceLock::new();
    S.get_or_init(|| AuthzStats::register(&mut prometheus_client::registry::Registry::default()))
}

fn labels() -> &'static Labels {
    static L: OnceLock<Labels> = OnceLock::new();
    L.get_or_init(|| [("app".to_string(), "httpbin".to_string())].into())
}

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let target = lines.next().unwrap_or("/");
    let host = lines.next().unwrap_or("");
    let method = Method::from_bytes(lines.next().unwrap_or("GET").as_bytes()).unwrap_or_default();

    if let Ok(normal) = normalize_path(target) {
        assert!(normal.starts_with('/'), "{target:?} → {normal:?}");
        let again = normalize_path(&normal);
        assert_eq!(
            again.as_deref(),
            Ok(&*normal),
            "normalising {target:?} twice"
        );
    }

    let mut op = Operation::default();
    let mut when = Vec::new();
    let mut route = Vec::new();
    for line in lines.take(32) {
        let mut chars = line.chars();
        let Some(tag) = chars.next() else { continue };
        let v = chars.as_str().to_string();
        match tag {
            'p' => op.paths.push(v),
            '!' => op.not_paths.push(v),
            'h' => op.hosts.push(v),
            'H' => op.not_hosts.push(v),
            'm' => op.methods.push(v),
            'w' => {
                let (key, value) = v.split_once('=').unwrap_or((&v, ""));
                when.push(Condition {
                    key: key.to_string(),
                    values: vec![value.to_string()],
                    not_values: vec![],
                });
            }
            'e' => route.push(PathMatch::Exact(v)),
            'b' => route.push(PathMatch::Prefix(v)),
            's' => route.push(PathMatch::SegmentPrefix(v)),
            'r' => route.push(PathMatch::Regex(v)),
            _ => op.paths.push(line.to_string()),
        }
    }
    let rule = AuthzRule {
        from: vec![],
        to: vec![op],
        when,
    };

    let mut headers = HeaderMap::new();
    if let Ok(h) = HeaderValue::from_str(host) {
        headers.insert(http::header::HOST, h);
    }
    headers.insert("x-user", HeaderValue::from_static("alice"));
    let identity = Identity::spiffe("foo", "sleep");
    let ctx = RequestContext {
        peer_ip: [10, 1, 2, 3].into(),
        peer_identity: Some(&identity),
        destination_ip: Some([10, 9, 9, 9].into()),
        destination_port: PORT,
        sni: None,
        http: Some(HttpAttributes {
            host,
            method: &method,
            path: target,
            headers: &headers,
            jwt: None,
        }),
    };

    let allow = decide(istio(AuthzAction::Allow, &rule), &ctx);
    let deny = decide(istio(AuthzAction::Deny, &rule), &ctx);
    assert!(
        !(allow && deny),
        "one rule set both allowed as ALLOW and not matched as DENY: {rule:?}"
    );
    let _ = decide(istio(AuthzAction::Audit, &rule), &ctx);

    let mut spec = SecuritySpec::new();
    spec.servers = vec![LinkerdServer {
        name: "foo/httpbin".into(),
        scope: Scope::Namespace("foo".into()),
        port: Some(PORT),
        access_policy: DefaultPolicy::Deny,
        routes: vec![(
            "foo/route".into(),
            route
                .into_iter()
                .map(|path| RouteMatch {
                    path: Some(path),
                    ..Default::default()
                })
                .collect(),
        )],
    }];
    let _ = decide(spec, &ctx);
}

fn istio(action: AuthzAction, rule: &AuthzRule) -> SecuritySpec {
    let mut spec = SecuritySpec::new();
    spec.authz = vec![AuthzPolicy {
        name: "foo/fuzz".into(),
        scope: Scope::Namespace("foo".into()),
        action,
        rules: vec![rule.clone()],
    }];
    spec
}

fn decide(spec: SecuritySpec, ctx: &RequestContext<'_>) -> bool {
    let workload = Workload {
        namespace: "foo",
        labels: labels(),
        service_port: PORT,
        trust_domain: "cluster.local",
    };
    let authorizer = Authorizer::compile(&spec, workload, stats());
    authorizer.authorize(ctx).allowed
}

#[cfg(test)]
mod tests {
    #[test]
    fn templates_conditions_and_routes() {
        super::run(b"/a/b/c?x=1\nexample.com\nGET\np/a/{*}/c\n!/a/{**}\nhexample.*\nmGET\nwrequest.headers[x-user]=alice\nb/a\nr/a/.*");
        super::run(b"/%2e%2E/..//x\n\n\n");
        super::run(b"");
    }
}
