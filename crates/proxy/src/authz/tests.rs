use super::*;
use http::header::HeaderName;
use model::route::{HeaderMatch, PathMatch, RouteMatch, StringMatch};
use model::security::{
    AuthzPolicy, AuthzRule, Condition, LinkerdAuthn, LinkerdAuthz, LinkerdServer, LinkerdTarget,
    Operation, Scope, Source,
};
use prometheus_client::registry::Registry;

// ---------------------------------------------------------------------------------------------
// Builders

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn httpbin() -> Labels {
    labels(&[("app", "httpbin"), ("version", "v1")])
}

const PORT: u16 = 8000;

fn workload(labels: &Labels) -> Workload<'_> {
    Workload {
        namespace: "foo",
        labels,
        service_port: PORT,
        trust_domain: "cluster.local",
    }
}

fn selector() -> Scope {
    Scope::Workload {
        namespace: "foo".into(),
        labels: labels(&[("app", "httpbin")]),
    }
}

fn policy(name: &str, action: AuthzAction, rules: Vec<AuthzRule>) -> AuthzPolicy {
    AuthzPolicy {
        name: format!("foo/{name}"),
        scope: selector(),
        action,
        rules,
    }
}

fn from(sources: Vec<Source>) -> AuthzRule {
    AuthzRule {
        from: sources,
        ..Default::default()
    }
}

fn to(ops: Vec<Operation>) -> AuthzRule {
    AuthzRule {
        to: ops,
        ..Default::default()
    }
}

fn when(key: &str, values: &[&str], not_values: &[&str]) -> AuthzRule {
    AuthzRule {
        when: vec![cond(key, values, not_values)],
        ..Default::default()
    }
}

fn cond(key: &str, values: &[&str], not_values: &[&str]) -> Condition {
    Condition {
        key: key.into(),
        values: strings(values),
        not_values: strings(not_values),
    }
}

fn principals(p: &[&str]) -> Source {
    Source {
        principals: strings(p),
        ..Default::default()
    }
}

fn methods(m: &[&str]) -> Operation {
    Operation {
        methods: strings(m),
        ..Default::default()
    }
}

fn paths(p: &[&str]) -> Operation {
    Operation {
        paths: strings(p),
        ..Default::default()
    }
}

fn spec(authz: Vec<AuthzPolicy>) -> SecuritySpec {
    let mut s = SecuritySpec::new();
    s.authz = authz;
    s
}

fn jwt(iss: &str, sub: &str, claims: serde_json::Value) -> VerifiedJwt {
    VerifiedJwt {
        issuer: iss.into(),
        subject: sub.into(),
        principal: format!("{iss}/{sub}"),
        audiences: claims["aud"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        presenter: claims["azp"].as_str().map(String::from),
        claims,
    }
}

/// An owned request, lent to the authorizer as a [`RequestContext`].
#[derive(Clone)]
struct Req {
    peer_ip: IpAddr,
    identity: Option<Identity>,
    destination_ip: Option<IpAddr>,
    port: u16,
    sni: Option<String>,
    /// `None`: a plain TCP connection.
    http: Option<(String, Method, String, HeaderMap)>,
    jwt: Option<VerifiedJwt>,
}

impl Req {
    /// `GET /` from the sleep workload of namespace `foo`, over mTLS.
    fn get(path: &str) -> Req {
        Req {
            peer_ip: "10.1.2.3".parse().unwrap(),
            identity: Some(Identity::spiffe("foo", "sleep")),
            destination_ip: Some("10.9.9.9".parse().unwrap()),
            port: PORT,
            sni: None,
            http: Some((
                "httpbin.foo:8000".into(),
                Method::GET,
                path.into(),
                HeaderMap::new(),
            )),
            jwt: None,
        }
    }

    fn tcp() -> Req {
        Req {
            http: None,
            ..Req::get("/")
        }
    }

    fn sa(mut self, ns: &str, sa: &str) -> Req {
        self.identity = Some(Identity::spiffe(ns, sa));
        self
    }

    fn identity(mut self, id: &str) -> Req {
        self.identity = Some(Identity(id.into()));
        self
    }

    fn plaintext(mut self) -> Req {
        self.identity = None;
        self
    }

    fn ip(mut self, ip: &str) -> Req {
        self.peer_ip = ip.parse().unwrap();
        self
    }

    fn method(mut self, m: Method) -> Req {
        self.http.as_mut().unwrap().1 = m;
        self
    }

    fn host(mut self, h: &str) -> Req {
        self.http.as_mut().unwrap().0 = h.into();
        self
    }

    fn header(mut self, name: &str, value: &str) -> Req {
        self.http.as_mut().unwrap().3.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        self
    }

    fn port(mut self, p: u16) -> Req {
        self.port = p;
        self
    }

    fn sni(mut self, s: &str) -> Req {
        self.sni = Some(s.into());
        self
    }

    fn token(mut self, j: VerifiedJwt) -> Req {
        self.jwt = Some(j);
        self
    }

    fn ctx(&self) -> RequestContext<'_> {
        RequestContext {
            peer_ip: self.peer_ip,
            peer_identity: self.identity.as_ref(),
            destination_ip: self.destination_ip,
            destination_port: self.port,
            sni: self.sni.as_deref(),
            http: self
                .http
                .as_ref()
                .map(|(host, method, path, headers)| HttpAttributes {
                    host,
                    method,
                    path,
                    headers,
                    jwt: self.jwt.as_ref(),
                }),
        }
    }
}

fn compile(spec: &SecuritySpec) -> Authorizer {
    let l = httpbin();
    Authorizer::compile(spec, workload(&l), &AuthzStats::default())
}

fn allowed(a: &Authorizer, r: &Req) -> bool {
    a.authorize(&r.ctx()).allowed
}

// ---------------------------------------------------------------------------------------------
// Istio: evaluation order

#[test]
fn with_no_policy_everything_is_allowed_by_the_linkerd_default() {
    let a = compile(&SecuritySpec::new());
    let d = a.authorize(&Req::get("/").plaintext().ctx());
    assert!(d.allowed);
    assert_eq!(&*d.policy, "default:all-unauthenticated");
    assert_eq!(d.reason, Reason::DefaultAllows);
    assert!(!d.audited);
    assert!(a.errors().is_empty() && a.unsupported().is_empty());
}

#[test]
fn istio_task_allow_get_headers_from_one_principal() {
    // security/authorization/authz-http: allow GET from sleep, nothing else.
    let a = compile(&spec(vec![policy(
        "get",
        AuthzAction::Allow,
        vec![AuthzRule {
            from: vec![principals(&["cluster.local/ns/foo/sa/sleep"])],
            to: vec![Operation {
                methods: strings(&["GET"]),
                paths: strings(&["/headers", "/ip"]),
                ..Default::default()
            }],
            ..Default::default()
        }],
    )]));
    let d = a.authorize(&Req::get("/headers").ctx());
    assert!(d.allowed);
    assert_eq!(&*d.policy, "foo/get");
    assert_eq!(d.reason, Reason::AllowPolicyMatched);
    assert!(allowed(&a, &Req::get("/ip?x=1")));
    assert!(!allowed(&a, &Req::get("/headers").method(Method::POST)));
    assert!(!allowed(&a, &Req::get("/status/200")));
    assert!(!allowed(&a, &Req::get("/headers").plaintext()));
    let d = a.authorize(&Req::get("/headers").sa("foo", "other").ctx());
    assert!(!d.allowed);
    assert_eq!(&*d.policy, NO_MATCH);
    assert_eq!(d.reason, Reason::NoAllowPolicyMatched);
}

#[test]
fn deny_beats_allow() {
    let a = compile(&spec(vec![
        policy("allow-all", AuthzAction::Allow, vec![AuthzRule::default()]),
        policy(
            "deny-get",
            AuthzAction::Deny,
            vec![to(vec![methods(&["GET"])])],
        ),
    ]));
    let d = a.authorize(&Req::get("/").ctx());
    assert!(!d.allowed);
    assert_eq!(&*d.policy, "foo/deny-get");
    assert_eq!(d.reason, Reason::DenyPolicyMatched);
    let d = a.authorize(&Req::get("/").method(Method::POST).ctx());
    assert!(d.allowed);
    assert_eq!(&*d.policy, "foo/allow-all");
}

#[test]
fn deny_policies_alone_allow_what_they_do_not_match() {
    let a = compile(&spec(vec![policy(
        "deny-post",
        AuthzAction::Deny,
        vec![to(vec![methods(&["POST"])])],
    )]));
    let d = a.authorize(&Req::get("/").ctx());
    assert!(d.allowed);
    // Not decided by an Istio policy: the Linkerd default names it.
    assert_eq!(&*d.policy, "default:all-unauthenticated");
    assert!(!allowed(&a, &Req::get("/").method(Method::POST)));
}

#[test]
fn empty_rules_allow_nothing_and_deny_nothing() {
    let allow_nothing = compile(&spec(vec![policy(
        "allow-nothing",
        AuthzAction::Allow,
        vec![],
    )]));
    assert!(!allowed(&allow_nothing, &Req::get("/")));
    let deny_nothing = compile(&spec(vec![policy(
        "deny-nothing",
        AuthzAction::Deny,
        vec![],
    )]));
    assert!(allowed(&deny_nothing, &Req::get("/")));
    // One empty rule matches everything.
    let allow_all = compile(&spec(vec![policy(
        "all",
        AuthzAction::Allow,
        vec![AuthzRule::default()],
    )]));
    assert!(allowed(
        &allow_all,
        &Req::get("/").plaintext().ip("203.0.113.1")
    ));
    let deny_all = compile(&spec(vec![policy(
        "all",
        AuthzAction::Deny,
        vec![AuthzRule::default()],
    )]));
    assert!(!allowed(&deny_all, &Req::get("/")));
}

#[test]
fn another_allow_policy_can_rescue_an_allow_nothing() {
    let a = compile(&spec(vec![
        policy("allow-nothing", AuthzAction::Allow, vec![]),
        policy("get", AuthzAction::Allow, vec![to(vec![methods(&["GET"])])]),
    ]));
    assert!(allowed(&a, &Req::get("/")));
    assert!(!allowed(&a, &Req::get("/").method(Method::DELETE)));
}

#[test]
fn audit_only_marks() {
    let a = compile(&spec(vec![policy(
        "audit-get",
        AuthzAction::Audit,
        vec![to(vec![methods(&["GET"])])],
    )]));
    let d = a.authorize(&Req::get("/").ctx());
    assert!(d.allowed && d.audited);
    let d = a.authorize(&Req::get("/").method(Method::PUT).ctx());
    assert!(d.allowed && !d.audited);
    // An audited request that is denied stays denied, and still marked.
    let a = compile(&spec(vec![
        policy(
            "audit-get",
            AuthzAction::Audit,
            vec![to(vec![methods(&["GET"])])],
        ),
        policy(
            "deny-get",
            AuthzAction::Deny,
            vec![to(vec![methods(&["GET"])])],
        ),
    ]));
    let d = a.authorize(&Req::get("/").ctx());
    assert!(!d.allowed && d.audited);
}

#[test]
fn custom_is_reported_and_not_evaluated() {
    let a = compile(&spec(vec![policy(
        "ext-authz",
        AuthzAction::Custom,
        vec![AuthzRule::default()],
    )]));
    assert_eq!(a.unsupported().len(), 1);
    assert!(
        a.unsupported()[0].contains("foo/ext-authz"),
        "{:?}",
        a.unsupported()
    );
    assert!(a.unsupported()[0].contains("CUSTOM"));
    assert!(allowed(&a, &Req::get("/")));
}

#[test]
fn scopes_select_the_workload() {
    let mut mesh = policy("deny-all", AuthzAction::Deny, vec![AuthzRule::default()]);
    mesh.scope = Scope::Mesh;
    mesh.name = "istio-system/deny-all".into();
    let a = compile(&spec(vec![mesh.clone()]));
    assert_eq!(
        &*a.authorize(&Req::get("/").ctx()).policy,
        "istio-system/deny-all"
    );

    let mut other_ns = mesh.clone();
    other_ns.scope = Scope::Namespace("bar".into());
    assert!(allowed(&compile(&spec(vec![other_ns])), &Req::get("/")));

    let mut this_ns = mesh.clone();
    this_ns.scope = Scope::Namespace("foo".into());
    assert!(!allowed(&compile(&spec(vec![this_ns])), &Req::get("/")));

    let mut other_app = mesh;
    other_app.scope = Scope::Workload {
        namespace: "foo".into(),
        labels: labels(&[("app", "productpage")]),
    };
    assert!(allowed(&compile(&spec(vec![other_app])), &Req::get("/")));
}

// ---------------------------------------------------------------------------------------------
// Istio: rule structure

#[test]
fn sources_and_operations_are_ored_conditions_anded_fields_anded() {
    let a = compile(&spec(vec![policy(
        "p",
        AuthzAction::Allow,
        vec![AuthzRule {
            from: vec![
                principals(&["cluster.local/ns/foo/sa/sleep"]),
                Source {
                    namespaces: strings(&["test"]),
                    ..Default::default()
                },
            ],
            to: vec![
                Operation {
                    methods: strings(&["GET"]),
                    paths: strings(&["/info*"]),
                    ..Default::default()
                },
                Operation {
                    methods: strings(&["POST"]),
                    paths: strings(&["/data"]),
                    ..Default::default()
                },
            ],
            when: vec![
                cond("request.headers[x-a]", &["1"], &[]),
                cond("request.headers[x-b]", &["2"], &[]),
            ],
        }],
    )]));
    let ok = |r: Req| r.header("x-a", "1").header("x-b", "2");
    assert!(allowed(&a, &ok(Req::get("/info/x"))));
    assert!(allowed(&a, &ok(Req::get("/data").method(Method::POST))));
    assert!(allowed(&a, &ok(Req::get("/info").sa("test", "anyone"))));
    // Fields of one operation are ANDed: GET /data matches neither operation.
    assert!(!allowed(&a, &ok(Req::get("/data"))));
    assert!(!allowed(&a, &ok(Req::get("/info").sa("bar", "sleep"))));
    // Every condition must hold.
    assert!(!allowed(&a, &Req::get("/info").header("x-a", "1")));
    assert!(!allowed(&a, &Req::get("/info").header("x-b", "2")));
}

#[test]
fn fields_of_one_source_are_anded() {
    let a = compile(&spec(vec![policy(
        "p",
        AuthzAction::Allow,
        vec![from(vec![Source {
            namespaces: strings(&["foo"]),
            ip_blocks: strings(&["10.1.0.0/16"]),
            ..Default::default()
        }])],
    )]));
    assert!(allowed(&a, &Req::get("/")));
    assert!(!allowed(&a, &Req::get("/").ip("10.2.0.1")));
    assert!(!allowed(&a, &Req::get("/").sa("bar", "sleep")));
}

#[test]
fn not_fields_negate_and_absent_attributes_match_them() {
    // The Istio idiom for "mTLS only": DENY notPrincipals ["*"].
    let a = compile(&spec(vec![policy(
        "require-mtls",
        AuthzAction::Deny,
        vec![from(vec![Source {
            not_principals: strings(&["*"]),
            ..Default::default()
        }])],
    )]));
    assert!(allowed(&a, &Req::get("/")));
    assert!(!allowed(&a, &Req::get("/").plaintext()));

    let a = compile(&spec(vec![policy(
        "p",
        AuthzAction::Allow,
        vec![AuthzRule {
            from: vec![Source {
                not_namespaces: strings(&["bar"]),
                not_ip_blocks: strings(&["10.1.2.0/24"]),
                ..Default::default()
            }],
            to: vec![Operation {
                not_methods: strings(&["DELETE"]),
                not_paths: strings(&["/admin*"]),
                not_ports: vec![9000],
                ..Default::default()
            }],
            ..Default::default()
        }],
    )]));
    let base = || Req::get("/").ip("10.7.0.1");
    assert!(allowed(&a, &base()));
    assert!(!allowed(&a, &base().sa("bar", "x")));
    assert!(!allowed(&a, &Req::get("/")), "10.1.2.3 is in notIpBlocks");
    assert!(!allowed(&a, &base().method(Method::DELETE)));
    assert!(!allowed(&a, &Req::get("/admin/x").ip("10.7.0.1")));
    assert!(!allowed(&a, &base().port(9000)));
    // Plaintext: no namespace, so notNamespaces holds.
    assert!(allowed(&a, &base().plaintext()));
}

#[test]
fn string_patterns_exact_prefix_suffix_presence() {
    let rule = |p: &[&str]| vec![from(vec![principals(p)])];
    let cases: [(&[&str], &str, bool); 8] = [
        (&["cluster.local/ns/foo/sa/sleep"], "sleep", true),
        (&["cluster.local/ns/foo/sa/sleep"], "sleepy", false),
        (&["cluster.local/ns/foo/*"], "anything", true),
        (&["*/sa/sleep"], "sleep", true),
        (&["*/sa/sleep"], "nosleep", false),
        (&["*"], "x", true),
        // A `spiffe://` prefix in the policy is tolerated.
        (&["spiffe://cluster.local/ns/foo/sa/sleep"], "sleep", true),
        (&["cluster.local/ns/foo/sa/sl*p"], "sleep", false),
    ];
    for (pattern, sa, expected) in cases {
        let a = compile(&spec(vec![policy("p", AuthzAction::Allow, rule(pattern))]));
        assert_eq!(
            allowed(&a, &Req::get("/").sa("foo", sa)),
            expected,
            "{pattern:?} vs sa {sa}"
        );
    }
    let a = compile(&spec(vec![policy("p", AuthzAction::Allow, rule(&["*"]))]));
    assert!(
        !allowed(&a, &Req::get("/").plaintext()),
        "`*` needs a principal"
    );
}

#[test]
fn namespaces_come_from_the_principal() {
    let a = compile(&spec(vec![policy(
        "p",
        AuthzAction::Allow,
        vec![from(vec![Source {
            namespaces: strings(&["team-*"]),
            ..Default::default()
        }])],
    )]));
    assert!(allowed(&a, &Req::get("/").sa("team-a", "x")));
    assert!(!allowed(&a, &Req::get("/").sa("foo", "x")));
    assert!(!allowed(&a, &Req::get("/").plaintext()));
    assert!(!allowed(
        &a,
        &Req::get("/").identity("spiffe://cluster.local/weird")
    ));
}

#[test]
fn ip_blocks_and_remote_ip_blocks() {
    let a = compile(&spec(vec![policy(
        "p",
        AuthzAction::Allow,
        vec![from(vec![Source {
            ip_blocks: strings(&["10.1.0.0/16", "192.168.0.7", "2001:db8::/32"]),
            ..Default::default()
        }])],
    )]));
    assert!(allowed(&a, &Req::get("/")));
    assert!(allowed(&a, &Req::get("/").ip("192.168.0.7")));
    assert!(
        allowed(&a, &Req::get("/").ip("::ffff:10.1.9.9")),
        "v4-mapped"
    );
    assert!(allowed(&a, &Req::get("/").ip("2001:db8::1")));
    assert!(!allowed(&a, &Req::get("/").ip("192.168.0.8")));

    let a = compile(&spec(vec![policy(
        "p",
        AuthzAction::Allow,
        vec![from(vec![Source {
            remote_ip_blocks: strings(&["203.0.113.0/24"]),
            ..Default::default()
        }])],
    )]));
    let via_gateway = Req::get("/").header("x-forwarded-for", "203.0.113.9, 10.0.0.1");
    assert!(allowed(&a, &via_gateway));
    assert!(!allowed(
        &a,
        &Req::get("/").header("x-forwarded-for", "198.51.100.1")
    ));
    // No X-Forwarded-For: the peer is the client.
    assert!(allowed(&a, &Req::get("/").ip("203.0.113.4")));
    assert!(!allowed(&a, &Req::get("/")));
}

#[test]
fn hosts_are_case_insensitive_and_portless_unless_they_say() {
    let op = |h: &[&str]| {
        vec![to(vec![Operation {
            hosts: strings(h),
            ..Default::default()
        }])]
    };
    let cases: [(&[&str], &str, bool); 9] = [
        (&["httpbin.foo"], "httpbin.foo:8000", true),
        (&["httpbin.foo"], "HTTPBIN.Foo", true),
        (&["HTTPBIN.FOO"], "httpbin.foo", true),
        (&["*.example.com"], "API.Example.com:443", true),
        (&["*.example.com"], "example.com", false),
        (&["httpbin.*"], "httpbin.foo.svc", true),
        (&["httpbin.foo:8000"], "httpbin.foo:8000", true),
        (&["httpbin.foo:8000"], "httpbin.foo:9000", false),
        (&["[::1]"], "[::1]:8000", true),
    ];
    for (hosts, host, expected) in cases {
        let a = compile(&spec(vec![policy("p", AuthzAction::Allow, op(hosts))]));
        assert_eq!(
            allowed(&a, &Req::get("/").host(host)),
            expected,
            "{hosts:?} vs {host}"
        );
    }
}

#[test]
fn ports_and_methods() {
    let a = compile(&spec(vec![policy(
        "p",
        AuthzAction::Allow,
        vec![to(vec![Operation {
            ports: vec![8000, 8080],
            methods: strings(&["GET", "HEAD"]),
            ..Default::default()
        }])],
    )]));
    assert!(allowed(&a, &Req::get("/")));
    assert!(allowed(&a, &Req::get("/").port(8080).method(Method::HEAD)));
    assert!(!allowed(&a, &Req::get("/").port(9090)));
    assert!(!allowed(&a, &Req::get("/").method(Method::POST)));
}

// ---------------------------------------------------------------------------------------------
// Paths

#[test]
fn path_patterns_and_templates() {
    let cases: [(&str, &str, bool); 22] = [
        ("/headers", "/headers", true),
        ("/headers", "/headers/", false),
        ("/headers", "/headers?a=b", true),
        ("/api/*", "/api/v1/x", true),
        ("/api/*", "/apix", false),
        ("*.html", "/a/b.html", true),
        ("*", "/", true),
        ("/foo/{*}", "/foo/bar", true),
        ("/foo/{*}", "/foo/bar/baz", false),
        ("/foo/{*}", "/foo/", false),
        ("/foo/{**}", "/foo/bar/baz", true),
        ("/foo/{**}", "/foo/", true),
        ("/foo/{**}", "/foo", false),
        ("/foo/{**}/", "/foo/bar/", true),
        ("/foo/{**}/", "/foo/bar/baz/", true),
        ("/foo/{**}/", "/foo/bar", false),
        ("/foo/{*}/bar/{**}", "/foo/buzz/bar/", true),
        ("/foo/{*}/bar/{**}", "/foo/buzz/bar/baz", true),
        ("/foo/{*}/bar/{**}", "/foo/buzz/qux/baz", false),
        ("/{*}/baz", "/x/baz", true),
        ("/{*}/baz", "/x/y/baz", false),
        ("/v1/{*}/items/{*}", "/v1/a/items/b", true),
    ];
    for (pattern, path, expected) in cases {
        let a = compile(&spec(vec![policy(
            "p",
            AuthzAction::Allow,
            vec![to(vec![paths(&[pattern])])],
        )]));
        assert!(a.errors().is_empty(), "{pattern}: {:?}", a.errors());
        assert_eq!(
            allowed(&a, &Req::get(path)),
            expected,
            "{pattern} vs {path}"
        );
    }
}

#[test]
fn invalid_path_templates_are_errors_naming_the_policy() {
    for bad in ["/{**}/foo/{*}", "/foo/{*}.txt", "/*/baz/{*}", "/**/baz/{*}"] {
        let a = compile(&spec(vec![policy(
            "bad",
            AuthzAction::Allow,
            vec![to(vec![paths(&[bad])])],
        )]));
        assert_eq!(a.errors().len(), 1, "{bad}");
        let msg = a.errors()[0].to_string();
        assert!(
            msg.contains("foo/bad") && msg.contains("rules[0].to[0].operation.paths[0]"),
            "{msg}"
        );
    }
}

#[test]
fn paths_are_compared_normalised() {
    let a = compile(&spec(vec![policy(
        "deny-admin",
        AuthzAction::Deny,
        vec![to(vec![paths(&["/admin", "/admin/*"])])],
    )]));
    for sneaky in [
        "/admin",
        "/public/../admin",
        "//admin",
        "/./admin/",
        "/%61dmin",
        "/%2e%2e/admin/x",
        "\\admin",
        "/admin?x=/public",
        "/public/..%2Fadmin/../../admin",
    ] {
        assert!(
            !allowed(&a, &Req::get(sneaky)),
            "{sneaky} should be normalised to /admin"
        );
    }
    // `%2F` is not a separator under the default normalisation.
    assert!(allowed(&a, &Req::get("/admin%2Fx")));
    assert!(allowed(&a, &Req::get("/public")));
    let d = a.authorize(&Req::get("/x%00y").ctx());
    assert!(!d.allowed);
    assert_eq!(d.reason, Reason::InvalidPath);
}

#[test]
fn normalize_path_cases() {
    let cases = [
        ("/", "/"),
        ("", "/"),
        ("/a/b", "/a/b"),
        ("/a/b?q=1#f", "/a/b"),
        ("/a/./b/../c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/..", "/"),
        ("/../../x", "/x"),
        ("/a//b///c", "/a/b/c"),
        ("/a//", "/a/"),
        ("/%7Euser/%41%2d%5F", "/~user/A-_"),
        ("/a%2fb", "/a%2Fb"),
        ("/a%3ab", "/a%3Ab"),
        ("/a\\b", "/a/b"),
        ("/caf%C3%A9", "/caf%C3%A9"),
        ("/bad%zz", "/bad%zz"),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize_path(raw).unwrap(), want, "{raw:?}");
    }
    assert!(matches!(
        normalize_path("/a/b"),
        Ok(std::borrow::Cow::Borrowed(_))
    ));
    assert_eq!(normalize_path("/a%00"), Err(InvalidPath));
}

// ---------------------------------------------------------------------------------------------
// Conditions and JWT attributes

#[test]
fn header_conditions() {
    let a = compile(&spec(vec![policy(
        "p",
        AuthzAction::Allow,
        vec![AuthzRule {
            when: vec![
                cond("request.headers[X-Version]", &["v1", "v2*"], &["v2-beta"]),
                cond("request.headers[x-present]", &["*"], &[]),
            ],
            ..Default::default()
        }],
    )]));
    let r = |v: &str| {
        Req::get("/")
            .header("x-version", v)
            .header("x-present", "yes")
    };
    assert!(allowed(&a, &r("v1")));
    assert!(allowed(&a, &r("v2-stable")));
    assert!(!allowed(&a, &r("v2-beta")));
    assert!(!allowed(&a, &r("v3")));
    assert!(!allowed(&a, &Req::get("/").header("x-version", "v1")));
    // Repeated headers are joined with `,`.
    let a = compile(&spec(vec![policy(
        "p",
        AuthzAction::Allow,
        vec![when("request.headers[x-multi]", &["a,b"], &[])],
    )]));
    assert!(allowed(
        &a,
        &Req::get("/").header("x-multi", "a").header("x-multi", "b")
    ));
    assert!(!allowed(&a, &Req::get("/").header("x-multi", "a")));
}

#[test]
fn connection_conditions() {
    let check = |key: &str, values: &[&str], not: &[&str], r: Req| {
        let a = compile(&spec(vec![policy(
            "p",
            AuthzAction::Allow,
            vec![when(key, values, not)],
        )]));
        assert!(a.errors().is_empty(), "{:?}", a.errors());
        allowed(&a, &r)
    };
    assert!(check("source.ip", &["10.1.0.0/16"], &[], Req::get("/")));
    assert!(!check("source.ip", &["10.2.0.0/16"], &[], Req::get("/")));
    assert!(check(
        "remote.ip",
        &["203.0.113.1"],
        &[],
        Req::get("/").header("x-forwarded-for", "203.0.113.1")
    ));
    assert!(check(
        "source.principal",
        &["cluster.local/ns/foo/sa/sleep"],
        &[],
        Req::get("/")
    ));
    assert!(!check(
        "source.principal",
        &["*"],
        &[],
        Req::get("/").plaintext()
    ));
    assert!(check("source.namespace", &["foo"], &[], Req::get("/")));
    assert!(check("source.namespace", &[], &["bar"], Req::get("/")));
    assert!(check(
        "destination.ip",
        &["10.9.9.0/24"],
        &[],
        Req::get("/")
    ));
    assert!(check("destination.port", &["8000"], &[], Req::get("/")));
    assert!(!check(
        "destination.port",
        &["8000"],
        &[],
        Req::get("/").port(8001)
    ));
    assert!(check(
        "connection.sni",
        &["*.foo.svc"],
        &[],
        Req::get("/").sni("httpbin.foo.svc")
    ));
    assert!(!check("connection.sni", &["*.foo.svc"], &[], Req::get("/")));
}

#[test]
fn jwt_principals_and_claims() {
    let token = jwt(
        "https://issuer.example",
        "alice",
        serde_json::json!({
            "iss": "https://issuer.example",
            "sub": "alice",
            "aud": ["web", "api"],
            "azp": "frontend",
            "groups": ["dev", "admin"],
            "role": "reader",
            "realm": {"team": "blue", "tags": ["x"]},
            "admin": true,
        }),
    );
    let with = || Req::get("/").token(token.clone());
    let check = |rule: AuthzRule, r: Req| {
        let a = compile(&spec(vec![policy("p", AuthzAction::Allow, vec![rule])]));
        assert!(a.errors().is_empty(), "{:?}", a.errors());
        allowed(&a, &r)
    };
    let rp = |p: &[&str]| {
        from(vec![Source {
            request_principals: strings(p),
            ..Default::default()
        }])
    };
    assert!(check(rp(&["*"]), with()));
    assert!(
        !check(rp(&["*"]), Req::get("/")),
        "`*` needs a verified token"
    );
    assert!(check(rp(&["https://issuer.example/alice"]), with()));
    assert!(check(rp(&["https://issuer.example/*"]), with()));
    assert!(!check(rp(&["https://issuer.example/bob"]), with()));
    let not_rp = from(vec![Source {
        not_request_principals: strings(&["*"]),
        ..Default::default()
    }]);
    assert!(check(not_rp, Req::get("/")));

    assert!(check(
        when(
            "request.auth.principal",
            &["https://issuer.example/alice"],
            &[]
        ),
        with()
    ));
    assert!(check(when("request.auth.audiences", &["api"], &[]), with()));
    assert!(!check(
        when("request.auth.audiences", &["other"], &[]),
        with()
    ));
    assert!(check(
        when("request.auth.presenter", &["frontend"], &[]),
        with()
    ));
    assert!(check(
        when("request.auth.claims[groups]", &["admin"], &[]),
        with()
    ));
    assert!(!check(
        when("request.auth.claims[groups]", &["ops"], &[]),
        with()
    ));
    assert!(check(
        when("request.auth.claims[role]", &["read*"], &[]),
        with()
    ));
    assert!(check(
        when("request.auth.claims[realm][team]", &["blue"], &[]),
        with()
    ));
    assert!(check(
        when("request.auth.claims[realm][tags]", &["x"], &[]),
        with()
    ));
    assert!(!check(
        when("request.auth.claims[realm][nope]", &["blue"], &[]),
        with()
    ));
    // Only strings and lists of strings are compared, as in Istio.
    assert!(!check(
        when("request.auth.claims[admin]", &["true"], &[]),
        with()
    ));
    assert!(!check(
        when("request.auth.claims[groups]", &["admin"], &[]),
        Req::get("/")
    ));
    assert!(check(
        when("request.auth.claims[groups]", &[], &["admin"]),
        Req::get("/")
    ));
}

#[test]
fn bad_conditions_are_errors_and_fail_closed() {
    let bad = [
        cond("request.regex.headers[x]", &["a.*"], &[]),
        cond("request.headers", &["a"], &[]),
        cond("request.headers[x]", &[], &[]),
        cond("source.ip", &["not-an-ip"], &[]),
        cond("destination.port", &["http"], &[]),
        cond("request.auth.claims[]", &["a"], &[]),
    ];
    for c in bad {
        let rule = AuthzRule {
            when: vec![c.clone()],
            ..Default::default()
        };
        let allow = compile(&spec(vec![policy(
            "p",
            AuthzAction::Allow,
            vec![rule.clone()],
        )]));
        assert_eq!(allow.errors().len(), 1, "{c:?}");
        assert!(allow.errors()[0].to_string().contains("foo/p"));
        assert!(
            !allowed(&allow, &Req::get("/")),
            "a bad ALLOW rule matches nothing: {c:?}"
        );
        let deny = compile(&spec(vec![policy("p", AuthzAction::Deny, vec![rule])]));
        assert!(
            !allowed(&deny, &Req::get("/")),
            "a bad DENY rule matches everything: {c:?}"
        );
    }
    let a = compile(&spec(vec![policy(
        "cidr",
        AuthzAction::Allow,
        vec![from(vec![Source {
            ip_blocks: strings(&["10.0.0.0/8", "10.0.0.0/33"]),
            ..Default::default()
        }])],
    )]));
    assert_eq!(
        a.errors()[0].to_string(),
        "AuthorizationPolicy foo/cidr: rules[0].from[0].source.ipBlocks[1]: \"10.0.0.0/33\": not an IP address or CIDR"
    );
}

// ---------------------------------------------------------------------------------------------
// TCP

#[test]
fn http_only_fields_on_tcp() {
    // ALLOW: a rule with HTTP-only fields matches nothing on a plain connection.
    let a = compile(&spec(vec![policy(
        "p",
        AuthzAction::Allow,
        vec![AuthzRule {
            from: vec![principals(&["cluster.local/ns/foo/sa/sleep"])],
            to: vec![methods(&["GET"])],
            ..Default::default()
        }],
    )]));
    assert!(allowed(&a, &Req::get("/")));
    assert!(!allowed(&a, &Req::tcp()));
    let a = compile(&spec(vec![policy(
        "p",
        AuthzAction::Allow,
        vec![from(vec![principals(&["cluster.local/ns/foo/sa/sleep"])])],
    )]));
    assert!(allowed(&a, &Req::tcp()), "principals are not HTTP-only");

    // DENY: the HTTP-only fields are ignored, so the rule denies the whole port.
    let a = compile(&spec(vec![policy(
        "p",
        AuthzAction::Deny,
        vec![AuthzRule {
            to: vec![Operation {
                methods: strings(&["GET"]),
                ports: vec![PORT],
                ..Default::default()
            }],
            when: vec![cond("request.headers[x]", &["y"], &[])],
            ..Default::default()
        }],
    )]));
    assert!(allowed(&a, &Req::get("/")), "HTTP: no x: y header");
    let d = a.authorize(&Req::tcp().ctx());
    assert!(!d.allowed);
    assert_eq!(&*d.policy, "foo/p");
    assert!(allowed(&a, &Req::tcp().port(9000)));
}

// ---------------------------------------------------------------------------------------------
// Linkerd

fn linkerd_spec(default: DefaultPolicy) -> SecuritySpec {
    let mut s = SecuritySpec::new();
    s.default_inbound_policy = default;
    s
}

#[test]
fn linkerd_default_policies() {
    let remote = "198.51.100.7";
    let cases: [(DefaultPolicy, Req, bool, Reason); 12] = [
        (
            DefaultPolicy::AllUnauthenticated,
            Req::get("/").plaintext().ip(remote),
            true,
            Reason::DefaultAllows,
        ),
        (
            DefaultPolicy::AllAuthenticated,
            Req::get("/"),
            true,
            Reason::DefaultAllows,
        ),
        (
            DefaultPolicy::AllAuthenticated,
            Req::get("/").identity("spiffe://other.org/ns/a/sa/b"),
            true,
            Reason::DefaultAllows,
        ),
        (
            DefaultPolicy::AllAuthenticated,
            Req::get("/").plaintext(),
            false,
            Reason::NotAuthenticated,
        ),
        (
            DefaultPolicy::ClusterAuthenticated,
            Req::get("/"),
            true,
            Reason::DefaultAllows,
        ),
        (
            DefaultPolicy::ClusterAuthenticated,
            Req::get("/").identity("spiffe://other.org/ns/a/sa/b"),
            false,
            Reason::ForeignTrustDomain,
        ),
        (
            DefaultPolicy::ClusterAuthenticated,
            Req::get("/").plaintext(),
            false,
            Reason::NotAuthenticated,
        ),
        (
            DefaultPolicy::ClusterUnauthenticated,
            Req::get("/").plaintext().ip("127.0.0.1"),
            true,
            Reason::DefaultAllows,
        ),
        (
            DefaultPolicy::ClusterUnauthenticated,
            Req::get("/").plaintext().ip("192.168.1.1"),
            true,
            Reason::DefaultAllows,
        ),
        (
            DefaultPolicy::ClusterUnauthenticated,
            Req::get("/").ip(remote),
            false,
            Reason::OutsideClusterNetworks,
        ),
        (
            DefaultPolicy::Deny,
            Req::get("/"),
            false,
            Reason::DefaultDeny,
        ),
        (
            DefaultPolicy::Audit,
            Req::get("/").plaintext().ip(remote),
            true,
            Reason::DefaultAllows,
        ),
    ];
    for (policy, req, expected, reason) in cases {
        let a = compile(&linkerd_spec(policy));
        let d = a.authorize(&req.ctx());
        assert_eq!((d.allowed, d.reason), (expected, reason), "{policy:?}");
        assert_eq!(&*d.policy, format!("default:{}", policy.as_str()));
        assert_eq!(d.audited, policy == DefaultPolicy::Audit, "{policy:?}");
    }
}

#[test]
fn the_most_specific_default_override_applies() {
    let mut s = linkerd_spec(DefaultPolicy::Deny);
    s.default_policy_overrides = vec![(
        Scope::Namespace("foo".into()),
        DefaultPolicy::AllAuthenticated,
    )];
    let a = compile(&s);
    assert!(allowed(&a, &Req::get("/")));
    assert!(!allowed(&a, &Req::get("/").plaintext()));
}

fn server(name: &str, port: Option<u16>, access: DefaultPolicy) -> LinkerdServer {
    LinkerdServer {
        name: format!("foo/{name}"),
        scope: selector(),
        port,
        access_policy: access,
        routes: vec![],
    }
}

fn lz(name: &str, target: LinkerdTarget, authns: Vec<LinkerdAuthn>) -> LinkerdAuthz {
    LinkerdAuthz {
        name: format!("foo/{name}"),
        target,
        authns,
    }
}

fn mesh_tls(ids: &[&str]) -> LinkerdAuthn {
    LinkerdAuthn::MeshTls {
        identities: strings(ids),
    }
}

#[test]
fn a_server_admits_only_what_its_authorizations_allow() {
    let mut s = linkerd_spec(DefaultPolicy::AllUnauthenticated);
    s.servers = vec![server("httpbin-http", None, DefaultPolicy::Deny)];
    s.linkerd_authz = vec![lz(
        "sleep-only",
        LinkerdTarget::Server("foo/httpbin-http".into()),
        vec![mesh_tls(&[
            "sleep.foo.serviceaccount.identity.linkerd.cluster.local",
        ])],
    )];
    let a = compile(&s);
    let d = a.authorize(&Req::get("/").ctx());
    assert!(d.allowed);
    assert_eq!(&*d.policy, "foo/sleep-only");
    assert_eq!(d.reason, Reason::Authorized);
    let d = a.authorize(&Req::get("/").sa("foo", "other").ctx());
    assert!(!d.allowed);
    assert_eq!(&*d.policy, "foo/httpbin-http");
    assert_eq!(d.reason, Reason::Unauthorized);
    // Another port is not the Server's: the default applies.
    assert!(allowed(&a, &Req::get("/").sa("foo", "other").port(9000)));
    // On TCP too.
    assert!(allowed(&a, &Req::tcp()));
    assert!(!allowed(&a, &Req::tcp().plaintext()));
}

#[test]
fn mesh_tls_identity_forms() {
    let cases: [(&str, Req, bool); 8] = [
        ("*", Req::get("/"), true),
        ("*", Req::get("/").plaintext(), false),
        (
            "spiffe://cluster.local/ns/foo/sa/sleep",
            Req::get("/"),
            true,
        ),
        ("cluster.local/ns/foo/sa/sleep", Req::get("/"), true),
        (
            "sleep.foo.serviceaccount.identity.linkerd.cluster.local",
            Req::get("/"),
            true,
        ),
        (
            "sleep.bar.serviceaccount.identity.linkerd.cluster.local",
            Req::get("/"),
            false,
        ),
        (
            "*.foo.serviceaccount.identity.linkerd.cluster.local",
            Req::get("/").sa("foo", "any"),
            true,
        ),
        (
            "*.foo.serviceaccount.identity.linkerd.cluster.local",
            Req::get("/").sa("bar", "any"),
            false,
        ),
    ];
    for (id, req, expected) in cases {
        let mut s = linkerd_spec(DefaultPolicy::AllUnauthenticated);
        s.servers = vec![server("srv", Some(PORT), DefaultPolicy::Deny)];
        s.linkerd_authz = vec![lz(
            "a",
            LinkerdTarget::Server("foo/srv".into()),
            vec![mesh_tls(&[id])],
        )];
        assert_eq!(allowed(&compile(&s), &req), expected, "{id}");
    }
}

#[test]
fn every_authn_of_an_authorization_must_hold() {
    let mut s = linkerd_spec(DefaultPolicy::Deny);
    s.servers = vec![server("srv", None, DefaultPolicy::Deny)];
    s.linkerd_authz = vec![
        lz(
            "net-and-mtls",
            LinkerdTarget::Server("foo/srv".into()),
            vec![
                LinkerdAuthn::Network {
                    cidrs: strings(&["10.0.0.0/8"]),
                    except: strings(&["10.66.0.0/16"]),
                },
                mesh_tls(&["*"]),
            ],
        ),
        lz(
            "probes",
            LinkerdTarget::Server("foo/srv".into()),
            vec![
                LinkerdAuthn::Network {
                    cidrs: strings(&["127.0.0.1/32"]),
                    except: vec![],
                },
                LinkerdAuthn::Unauthenticated,
            ],
        ),
    ];
    let a = compile(&s);
    assert!(allowed(&a, &Req::get("/")));
    assert!(!allowed(&a, &Req::get("/").ip("10.66.1.1")), "except");
    assert!(!allowed(&a, &Req::get("/").plaintext()), "needs mTLS too");
    assert!(!allowed(&a, &Req::get("/").ip("172.16.0.1")));
    let d = a.authorize(&Req::get("/").plaintext().ip("127.0.0.1").ctx());
    assert!(d.allowed);
    assert_eq!(&*d.policy, "foo/probes");
}

#[test]
fn a_server_access_policy_decides_when_no_authorization_matches() {
    for (access, plain_ok, audited) in [
        (DefaultPolicy::AllUnauthenticated, true, false),
        (DefaultPolicy::AllAuthenticated, false, false),
        (DefaultPolicy::Audit, true, true),
        (DefaultPolicy::Deny, false, false),
    ] {
        let mut s = linkerd_spec(DefaultPolicy::Deny);
        s.servers = vec![server("srv", None, access)];
        let d = compile(&s).authorize(&Req::get("/").plaintext().ctx());
        assert_eq!((d.allowed, d.audited), (plain_ok, audited), "{access:?}");
        assert_eq!(&*d.policy, "foo/srv");
    }
}

#[test]
fn route_and_namespace_authorizations() {
    let route = |path: &str| RouteMatch {
        path: Some(PathMatch::SegmentPrefix(path.into())),
        ..Default::default()
    };
    let mut srv = server("srv", None, DefaultPolicy::Deny);
    srv.routes = vec![
        ("foo/public".into(), vec![route("/public")]),
        (
            "foo/admin".into(),
            vec![RouteMatch {
                path: Some(PathMatch::SegmentPrefix("/admin".into())),
                method: Some("POST".into()),
                headers: vec![HeaderMatch {
                    name: "x-admin".into(),
                    value: StringMatch::Exact("1".into()),
                    invert: false,
                }],
                ..Default::default()
            }],
        ),
        (
            "foo/health".into(),
            vec![RouteMatch {
                path: Some(PathMatch::Exact("/healthz".into())),
                ..Default::default()
            }],
        ),
    ];
    let mut s = linkerd_spec(DefaultPolicy::Deny);
    s.servers = vec![srv];
    s.linkerd_authz = vec![
        lz(
            "anyone-public",
            LinkerdTarget::Route("foo/public".into()),
            vec![LinkerdAuthn::Unauthenticated],
        ),
        lz(
            "ops-admin",
            LinkerdTarget::Route("foo/admin".into()),
            vec![mesh_tls(&["spiffe://cluster.local/ns/foo/sa/ops"])],
        ),
        lz(
            "ns-meshed",
            LinkerdTarget::Namespace("foo".into()),
            vec![mesh_tls(&["*"])],
        ),
        lz(
            "elsewhere",
            LinkerdTarget::Namespace("bar".into()),
            vec![LinkerdAuthn::Unauthenticated],
        ),
    ];
    let a = compile(&s);
    assert!(a.errors().is_empty(), "{:?}", a.errors());
    let admin = || {
        Req::get("/admin/x")
            .method(Method::POST)
            .header("x-admin", "1")
    };
    let d = a.authorize(&Req::get("/public/a").plaintext().ctx());
    assert!(d.allowed);
    assert_eq!(&*d.policy, "foo/anyone-public");
    // The namespace authorization covers every route of the namespace's Servers.
    assert_eq!(&*a.authorize(&admin().ctx()).policy, "foo/ns-meshed");
    assert_eq!(
        &*a.authorize(&admin().sa("foo", "ops").ctx()).policy,
        "foo/ns-meshed"
    );
    assert!(!allowed(&a, &admin().plaintext()));
    assert!(allowed(&a, &Req::get("/healthz")));
    assert!(
        !allowed(&a, &Req::get("/healthz").plaintext()),
        "route without its own authz"
    );
    // The admin route's authorization does not extend to the public route's requests.
    let d = a.authorize(&Req::get("/admin/x").ctx());
    assert!(!d.allowed);
    assert!(d.route_not_found(), "{d}");
    assert_eq!(&*d.policy, "foo/srv");
    // Routes do not apply to plain connections.
    assert!(allowed(&a, &Req::tcp()));
}

#[test]
fn route_only_authorizations() {
    let mut srv = server("srv", None, DefaultPolicy::Deny);
    srv.routes = vec![
        (
            "foo/get".into(),
            vec![RouteMatch {
                method: Some("GET".into()),
                ..Default::default()
            }],
        ),
        ("foo/all".into(), vec![]),
    ];
    let mut s = linkerd_spec(DefaultPolicy::AllUnauthenticated);
    s.servers = vec![srv];
    s.linkerd_authz = vec![lz(
        "get",
        LinkerdTarget::Route("foo/get".into()),
        vec![LinkerdAuthn::Unauthenticated],
    )];
    let a = compile(&s);
    assert!(allowed(&a, &Req::get("/")));
    let d = a.authorize(&Req::get("/").method(Method::POST).ctx());
    assert_eq!((d.allowed, d.reason), (false, Reason::Unauthorized));
}

#[test]
fn bad_linkerd_resources_fail_closed() {
    let mut srv = server("srv", None, DefaultPolicy::Deny);
    srv.routes = vec![(
        "foo/bad".into(),
        vec![RouteMatch {
            path: Some(PathMatch::Regex("(".into())),
            ..Default::default()
        }],
    )];
    let mut s = linkerd_spec(DefaultPolicy::AllUnauthenticated);
    s.servers = vec![srv];
    s.linkerd_authz = vec![
        lz(
            "bad-net",
            LinkerdTarget::Server("foo/srv".into()),
            vec![LinkerdAuthn::Network {
                cidrs: strings(&["10.0.0.0/99"]),
                except: vec![],
            }],
        ),
        lz(
            "bad",
            LinkerdTarget::Route("foo/bad".into()),
            vec![LinkerdAuthn::Unauthenticated],
        ),
    ];
    let a = compile(&s);
    let errors: Vec<String> = a.errors().iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("foo/bad-net: network \"10.0.0.0/99\"")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("HTTPRoute foo/bad: invalid regex")),
        "{errors:?}"
    );
    let d = a.authorize(&Req::get("/").ctx());
    assert!(d.route_not_found());
    assert!(!allowed(&a, &Req::tcp()));
}

// ---------------------------------------------------------------------------------------------
// Both meshes, counting, answers

#[test]
fn istio_and_linkerd_must_both_allow() {
    let mut s = spec(vec![policy(
        "get",
        AuthzAction::Allow,
        vec![to(vec![methods(&["GET"])])],
    )]);
    s.default_inbound_policy = DefaultPolicy::AllAuthenticated;
    let a = compile(&s);
    let d = a.authorize(&Req::get("/").ctx());
    assert!(d.allowed);
    assert_eq!(
        &*d.policy, "foo/get",
        "the Istio policy that matched is named"
    );
    let d = a.authorize(&Req::get("/").plaintext().ctx());
    assert_eq!((d.allowed, d.reason), (false, Reason::NotAuthenticated));
    assert_eq!(&*d.policy, "default:all-authenticated");
    let d = a.authorize(&Req::get("/").method(Method::POST).ctx());
    assert_eq!(
        (d.allowed, &*d.policy),
        (false, NO_MATCH),
        "Istio decides first"
    );
}

#[test]
fn decisions_are_counted_by_policy_and_protocol() {
    let mut registry = Registry::default();
    let stats = AuthzStats::register(&mut registry);
    let s = spec(vec![
        policy("get", AuthzAction::Allow, vec![to(vec![methods(&["GET"])])]),
        policy(
            "tcp",
            AuthzAction::Allow,
            vec![from(vec![principals(&["*"])])],
        ),
    ]);
    let l = httpbin();
    let a = Authorizer::compile(&s, workload(&l), &stats);
    for _ in 0..3 {
        a.authorize(&Req::get("/").ctx());
    }
    a.authorize(&Req::get("/").method(Method::POST).plaintext().ctx());
    a.authorize(&Req::tcp().ctx());
    a.authorize(&Req::tcp().plaintext().ctx());
    assert_eq!(stats.count("foo/get", Protocol::http, true), 3);
    assert_eq!(stats.count(NO_MATCH, Protocol::http, false), 1);
    assert_eq!(stats.count("foo/tcp", Protocol::tcp, true), 1);
    assert_eq!(stats.count(NO_MATCH, Protocol::tcp, false), 1);
    assert_eq!(stats.count("foo/get", Protocol::http, false), 0);
    // A second authorizer (next snapshot) counts into the same series.
    let b = Authorizer::compile(&s, workload(&l), &stats);
    b.authorize(&Req::get("/").ctx());
    assert_eq!(stats.count("foo/get", Protocol::http, true), 4);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(r#"weft_inbound_authz_allow_total{policy="foo/get",protocol="http"} 4"#),
        "{text}"
    );
    assert!(
        text.contains(r#"weft_inbound_authz_deny_total{policy="none",protocol="tcp"} 1"#),
        "{text}"
    );
}

#[test]
fn the_denied_answer_is_envoys() {
    use http_body_util::BodyExt;
    let rsp = denied_response();
    assert_eq!(rsp.status(), http::StatusCode::FORBIDDEN);
    assert_eq!(crate::flags::of(&rsp), Some(Flag::Rbac));
    assert_eq!(rsp.headers()["x-weft-flag"], "RBAC");
    let body = futures::executor::block_on(rsp.into_body().collect())
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"RBAC: access denied");
    assert_eq!(Flag::parse("RBAC"), Some(Flag::Rbac));
}

#[test]
fn decisions_read_well() {
    let a = compile(&spec(vec![policy(
        "deny-all",
        AuthzAction::Deny,
        vec![AuthzRule::default()],
    )]));
    let d = a.authorize(&Req::get("/").ctx());
    assert_eq!(
        d.to_string(),
        "denied by foo/deny-all: a DENY policy matched"
    );
}

#[test]
fn attributes_of_a_request() {
    let req = http::Request::builder()
        .uri("/a/b?c=d")
        .header("host", "httpbin.foo:8000")
        .body(())
        .unwrap();
    let h = HttpAttributes::of(&req, None);
    assert_eq!(
        (h.host, h.path, h.method),
        ("httpbin.foo:8000", "/a/b?c=d", &Method::GET)
    );
    let req = http::Request::builder()
        .uri("http://api.example:80/x")
        .body(())
        .unwrap();
    assert_eq!(HttpAttributes::of(&req, None).host, "api.example:80");
}
