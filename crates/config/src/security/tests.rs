//! Security tests: Istio PeerAuthentications, AuthorizationPolicies and RequestAuthentications,
//! Linkerd Servers, authorizations, authentications and inbound routes, and the default inbound
//! policies, loaded from YAML (the shapes of Istio's and Linkerd's own examples where they have
//! them), with their errors and notices pinned to file, line and field.

use crate::{load_str, resources, Diagnostic, Errors, Loaded, Store};
use model::security::{
    AuthzAction, AuthzPolicy, AuthzRule, Condition, DefaultPolicy, JwtRule, LinkerdAuthn,
    LinkerdAuthz, LinkerdServer, LinkerdTarget, MtlsMode, Operation, PeerAuthn, RequestAuthn,
    Scope, SecuritySpec, Source,
};
use model::{Labels, PathMatch, RouteMatch};
use std::path::Path;

/// httpbin in foo and bar (Istio's tasks), sleep in foo, and a client without a sidecar in
/// legacy.
const MESH: &str = "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec:
  services:
  - name: httpbin
    namespace: foo
    port: 8000
    workloads:
    - {name: httpbin-foo, command: [httpbin], labels: {version: v1}}
  - name: httpbin
    namespace: bar
    port: 8000
    workloads:
    - {name: httpbin-bar, command: [httpbin]}
  - name: sleep
    namespace: foo
    port: 80
    workloads:
    - {name: sleep-foo, command: [sleep]}
  - name: sleep
    namespace: legacy
    port: 80
    workloads:
    - {name: sleep-legacy, command: [sleep], sidecar: false}
";

/// `docs` (whole documents), then the mesh: the documents keep their line numbers.
fn file(docs: &[&str]) -> String {
    let mut text = String::new();
    for d in docs {
        text.push_str(d);
        text.push_str("---\n");
    }
    text + MESH
}

fn load(docs: &[&str]) -> Result<Loaded, Errors> {
    load_str(Path::new("sec.yaml"), &file(docs))
}

/// Loads; nothing may be rejected.
fn ok(docs: &[&str]) -> Loaded {
    let loaded = load(docs).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lines(&loaded.rejected), Vec::<String>::new());
    loaded
}

fn security(loaded: &Loaded) -> &SecuritySpec {
    &loaded.mesh.as_ref().unwrap().security
}

/// Diagnostics as `LINE:COL: FIELD: MESSAGE`.
fn lines(diagnostics: &[Diagnostic]) -> Vec<String> {
    diagnostics
        .iter()
        .map(|d| {
            let d = d.to_string();
            d.strip_prefix("sec.yaml:").unwrap_or(&d).to_string()
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn workload(namespace: &str, pairs: &[(&str, &str)]) -> Scope {
    Scope::Workload {
        namespace: namespace.into(),
        labels: labels(pairs),
    }
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

// --- Istio PeerAuthentication ------------------------------------------------------------

#[test]
fn peer_authentications_by_scope() {
    // Istio's mTLS migration task and the PeerAuthentication reference examples.
    let mesh_wide = "\
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: STRICT
";
    let namespace = "\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: legacy}
spec:
  mtls: {mode: PERMISSIVE}
";
    let workload_level = "\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: httpbin, namespace: foo}
spec:
  selector:
    matchLabels: {app: httpbin}
  mtls:
    mode: UNSET
  portLevelMtls:
    8080:
      mode: DISABLE
    '8443': {mode: STRICT}
";
    // No spec at all: the namespace, inheriting.
    let bare = "\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: bare, namespace: bar}
";
    let loaded = ok(&[mesh_wide, namespace, workload_level, bare]);
    assert_eq!(lines(&loaded.unsupported), Vec::<String>::new());
    let s = security(&loaded);
    assert_eq!(
        s.peer_authns,
        [
            PeerAuthn {
                name: "PeerAuthentication istio-system/default".into(),
                scope: Scope::Mesh,
                mode: MtlsMode::Strict,
                ports: vec![],
            },
            PeerAuthn {
                name: "PeerAuthentication legacy/default".into(),
                scope: Scope::Namespace("legacy".into()),
                mode: MtlsMode::Permissive,
                ports: vec![],
            },
            PeerAuthn {
                name: "PeerAuthentication foo/httpbin".into(),
                scope: workload("foo", &[("app", "httpbin")]),
                mode: MtlsMode::Unset,
                ports: vec![(8080, MtlsMode::Disable), (8443, MtlsMode::Strict)],
            },
            PeerAuthn {
                name: "PeerAuthentication bar/bare".into(),
                scope: Scope::Namespace("bar".into()),
                mode: MtlsMode::Unset,
                ports: vec![],
            },
        ]
    );
    let httpbin = labels(&[("app", "httpbin")]);
    assert_eq!(s.mtls_mode("foo", &httpbin, 8000), MtlsMode::Strict);
    assert_eq!(s.mtls_mode("foo", &httpbin, 8080), MtlsMode::Disable);
    assert_eq!(s.mtls_mode("legacy", &httpbin, 80), MtlsMode::Permissive);
}

#[test]
fn port_level_mtls_needs_a_selector_and_port_numbers() {
    let no_selector = "\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ports, namespace: foo}
spec:
  portLevelMtls:
    8080: {mode: DISABLE}
";
    let bad = "\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: bad, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  mtls: {mode: STRICT}
  portLevelMtls:
    http: {mode: DISABLE}
    9000: {mode: OFF}
";
    let bad_mode = "\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mode, namespace: foo}
spec:
  mtls: {mode: strict}
";
    let loaded = load(&[no_selector, bad, bad_mode]).unwrap();
    assert_eq!(
        lines(&loaded.rejected),
        [
            "22:10: spec.mtls.mode: PeerAuthentication foo/mode: unknown variant `strict`, \
             expected one of `UNSET`, `DISABLE`, `PERMISSIVE`, `STRICT`",
            "5:3: spec.portLevelMtls: PeerAuthentication foo/ports: portLevelMtls needs a \
             workload selector (selector.matchLabels), as in Istio",
            "15:5: spec.portLevelMtls.http: PeerAuthentication foo/bad: `http` is not a port \
             number between 1 and 65535",
            "16:5: spec.portLevelMtls.9000: PeerAuthentication foo/bad: unknown variant `OFF`, \
             expected one of `UNSET`, `DISABLE`, `PERMISSIVE`, `STRICT`",
        ]
    );
    // The rest applies.
    assert!(security(&loaded).peer_authns.is_empty());
    assert_eq!(
        loaded
            .rejected_for("PeerAuthentication", "foo", "bad")
            .count(),
        2
    );
}

#[test]
fn a_root_namespace_peer_authentication_with_a_selector_is_ignored_as_in_istio() {
    let doc = "\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: pinned, namespace: istio-system}
spec:
  selector: {matchLabels: {app: httpbin}}
  mtls: {mode: STRICT}
";
    let loaded = ok(&[doc]);
    assert!(security(&loaded).peer_authns.is_empty());
    assert_eq!(
        lines(&loaded.unsupported),
        [
            "5:3: spec.selector: PeerAuthentication istio-system/pinned: a PeerAuthentication \
          with a selector in the root namespace istio-system is ignored, as in Istio (a \
          workload's PeerAuthentication goes in the workload's namespace)"
        ]
    );
}

// --- Istio AuthorizationPolicy -----------------------------------------------------------

#[test]
fn authorization_policy_every_field() {
    let doc = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels: {app: httpbin, version: v1}
  action: DENY
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/default/sa/sleep]
        notPrincipals: ['*/sa/legacy']
        requestPrincipals: ['testing@secure.istio.io/*']
        notRequestPrincipals: ['*/admin']
        namespaces: [test]
        notNamespaces: [legacy]
        ipBlocks: [10.0.0.0/8]
        notIpBlocks: [10.1.0.0/16]
        remoteIpBlocks: [203.0.113.0/24]
        notRemoteIpBlocks: [203.0.113.4]
    - source:
        serviceAccounts: [foo/sleep]
        notServiceAccounts: [foo/curl]
    to:
    - operation:
        hosts: [httpbin.foo]
        notHosts: ['*.internal']
        ports: ['8000', 9000]
        notPorts: ['15000']
        methods: [GET, HEAD]
        notMethods: [DELETE]
        paths: ['/info*', '/api/{*}/items/{**}']
        notPaths: ['/admin*']
    - {}
    when:
    - key: request.auth.claims[iss]
      values: ['https://accounts.google.com']
    - key: request.headers[x-token]
      notValues: [guest]
    - key: source.ip
      values: [10.0.0.1]
    - key: destination.port
      values: ['8000']
  - {}
";
    let loaded = ok(&[doc]);
    assert_eq!(lines(&loaded.unsupported), Vec::<String>::new());
    let expected = AuthzPolicy {
        name: "foo/httpbin".into(),
        scope: workload("foo", &[("app", "httpbin"), ("version", "v1")]),
        action: AuthzAction::Deny,
        rules: vec![
            AuthzRule {
                from: vec![
                    Source {
                        principals: strings(&["cluster.local/ns/default/sa/sleep"]),
                        not_principals: strings(&["*/sa/legacy"]),
                        request_principals: strings(&["testing@secure.istio.io/*"]),
                        not_request_principals: strings(&["*/admin"]),
                        namespaces: strings(&["test"]),
                        not_namespaces: strings(&["legacy"]),
                        ip_blocks: strings(&["10.0.0.0/8"]),
                        not_ip_blocks: strings(&["10.1.0.0/16"]),
                        remote_ip_blocks: strings(&["203.0.113.0/24"]),
                        not_remote_ip_blocks: strings(&["203.0.113.4"]),
                    },
                    Source {
                        principals: strings(&["*/ns/foo/sa/sleep"]),
                        not_principals: strings(&["*/ns/foo/sa/curl"]),
                        ..Source::default()
                    },
                ],
                to: vec![
                    Operation {
                        hosts: strings(&["httpbin.foo"]),
                        not_hosts: strings(&["*.internal"]),
                        ports: vec![8000, 9000],
                        not_ports: vec![15000],
                        methods: strings(&["GET", "HEAD"]),
                        not_methods: strings(&["DELETE"]),
                        paths: strings(&["/info*", "/api/{*}/items/{**}"]),
                        not_paths: strings(&["/admin*"]),
                    },
                    Operation::default(),
                ],
                when: vec![
                    Condition {
                        key: "request.auth.claims[iss]".into(),
                        values: strings(&["https://accounts.google.com"]),
                        not_values: vec![],
                    },
                    Condition {
                        key: "request.headers[x-token]".into(),
                        values: vec![],
                        not_values: strings(&["guest"]),
                    },
                    Condition {
                        key: "source.ip".into(),
                        values: strings(&["10.0.0.1"]),
                        not_values: vec![],
                    },
                    Condition {
                        key: "destination.port".into(),
                        values: strings(&["8000"]),
                        not_values: vec![],
                    },
                ],
            },
            AuthzRule::default(),
        ],
    };
    assert_eq!(security(&loaded).authz, [expected]);
}

#[test]
fn istio_authorization_task_policies() {
    // Istio's "HTTP traffic" authorization task, as published (v1 shapes).
    let allow_nothing = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-nothing
  namespace: foo
spec:
  {}
";
    let viewer = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin-viewer
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [\"cluster.local/ns/foo/sa/sleep\"]
    to:
    - operation:
        methods: [\"GET\"]
        paths: [\"/headers\"]
";
    let deny = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-method-get
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: DENY
  rules:
  - to:
    - operation:
        methods: [\"GET\"]
    when:
    - key: request.headers[x-token]
      notValues: [\"admin\"]
";
    let loaded = ok(&[allow_nothing, viewer, deny]);
    let authz = &security(&loaded).authz;
    assert_eq!(
        authz[0],
        AuthzPolicy {
            name: "foo/allow-nothing".into(),
            scope: Scope::Namespace("foo".into()),
            action: AuthzAction::Allow,
            rules: vec![],
        }
    );
    assert_eq!(authz[1].action, AuthzAction::Allow);
    assert_eq!(authz[1].rules[0].to[0].paths, ["/headers"]);
    assert_eq!(authz[2].action, AuthzAction::Deny);
    assert_eq!(authz[2].rules[0].when[0].not_values, ["admin"]);
}

/// `serviceAccounts` / `notServiceAccounts` in both of Istio's forms: `NAMESPACE/SA`, and `SA`
/// alone for one in the policy's namespace (as Istio's own authz test data writes them); a
/// wildcard, an empty part, a second `/` or a principal list beside them are errors, as in
/// Istio's validation.
#[test]
fn service_accounts_take_istios_short_form_in_the_policys_namespace() {
    let doc = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin-1, namespace: foo}
spec:
  rules:
  - from:
    - source:
        serviceAccounts: [ \"my-ns/my-sa\", \"sa-only\" ]
        notServiceAccounts: [ \"my-ns/my-sa-not\", \"sa-not-only\" ]
";
    let loaded = ok(&[doc]);
    let p = &security(&loaded).authz[0];
    assert_eq!(
        p.rules[0].from[0].principals,
        strings(&["*/ns/my-ns/sa/my-sa", "*/ns/foo/sa/sa-only"])
    );
    assert_eq!(
        p.rules[0].from[0].not_principals,
        strings(&["*/ns/my-ns/sa/my-sa-not", "*/ns/foo/sa/sa-not-only"])
    );

    let bad = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: foo}
spec:
  rules:
  - from:
    - source:
        serviceAccounts: ['ns/*', '/sa', 'ns/', 'a/b/c', '']
  - from:
    - source:
        notServiceAccounts: [sleep]
        notNamespaces: [bar]
";
    let loaded = load(&[bad]).unwrap();
    assert_eq!(
        lines(&loaded.rejected),
        [
            "8:27: spec.rules[0].from[0].source.serviceAccounts[0]: AuthorizationPolicy foo/bad: \
             `ns/*`: no wildcard is allowed in a service account",
            "8:35: spec.rules[0].from[0].source.serviceAccounts[1]: AuthorizationPolicy foo/bad: \
             `/sa` is not SERVICE_ACCOUNT or NAMESPACE/SERVICE_ACCOUNT",
            "8:42: spec.rules[0].from[0].source.serviceAccounts[2]: AuthorizationPolicy foo/bad: \
             `ns/` is not SERVICE_ACCOUNT or NAMESPACE/SERVICE_ACCOUNT",
            "8:49: spec.rules[0].from[0].source.serviceAccounts[3]: AuthorizationPolicy foo/bad: \
             `a/b/c` is not SERVICE_ACCOUNT or NAMESPACE/SERVICE_ACCOUNT",
            "8:58: spec.rules[0].from[0].source.serviceAccounts[4]: AuthorizationPolicy foo/bad: \
             must not be empty",
            "11:9: spec.rules[1].from[0].source.notServiceAccounts: AuthorizationPolicy foo/bad: \
             serviceAccounts and notServiceAccounts cannot be set with principals, \
             notPrincipals, namespaces or notNamespaces",
        ]
    );
}

#[test]
fn authorization_policy_errors_name_file_line_and_field() {
    let bad = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: foo}
spec:
  rules:
  - from:
    - source:
        ipBlocks: [10.0.0.300]
        principals: ['']
    to:
    - operation:
        ports: [http]
        paths: ['/a/{**}/{*}', '/b/{id}']
        notPaths: ['/c/{*}*']
    when:
    - key: request.user
      values: [x]
    - key: source.ip
      values: [nowhere]
    - key: request.headers[x-a]
";
    let good = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: good, namespace: foo}
spec:
  action: AUDIT
  rules: [{}]
";
    let loaded = load(&[bad, good]).unwrap();
    assert_eq!(
        lines(&loaded.rejected),
        [
            "9:22: spec.rules[0].from[0].source.principals[0]: AuthorizationPolicy foo/bad: must \
             not be empty",
            "8:20: spec.rules[0].from[0].source.ipBlocks[0]: AuthorizationPolicy foo/bad: \
             `10.0.0.300` is not an IP address or CIDR like 10.0.0.0/8",
            "12:17: spec.rules[0].to[0].operation.ports[0]: AuthorizationPolicy foo/bad: `http` \
             is not a port number between 1 and 65535",
            "13:17: spec.rules[0].to[0].operation.paths[0]: AuthorizationPolicy foo/bad: \
             `/a/{**}/{*}`: {**} must be the last operator of a path template",
            "13:32: spec.rules[0].to[0].operation.paths[1]: AuthorizationPolicy foo/bad: \
             `/b/{id}`: `{` and `}` are only allowed in the path templates {*} and {**}",
            "14:20: spec.rules[0].to[0].operation.notPaths[0]: AuthorizationPolicy foo/bad: \
             `/c/{*}*`: segment `{*}*`: an operator must be a whole segment, {*} or {**}",
            "16:7: spec.rules[0].when[0].key: AuthorizationPolicy foo/bad: unknown attribute \
             `request.user`; supported: source.ip, remote.ip, source.namespace, \
             source.principal, request.auth.principal, request.auth.audiences, \
             request.auth.presenter, destination.ip, destination.port, connection.sni, \
             request.headers[NAME], request.auth.claims[CLAIM]",
            "19:16: spec.rules[0].when[1].values[0]: AuthorizationPolicy foo/bad: `nowhere` is \
             not an IP address or CIDR like 10.0.0.0/8",
            "20:7: spec.rules[0].when[2]: AuthorizationPolicy foo/bad: a condition needs values \
             or notValues",
        ]
    );
    // The good one applies.
    let authz = &security(&loaded).authz;
    assert_eq!(authz.len(), 1);
    assert_eq!(authz[0].action, AuthzAction::Audit);
}

#[test]
fn custom_is_kept_and_noticed_and_provider_is_checked() {
    let custom = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: istio-system}
spec:
  selector:
    matchLabels: {app: istio-ingressgateway}
  action: CUSTOM
  provider: {name: my-custom-authz}
  rules:
  - to:
    - operation: {paths: ['/admin/*']}
";
    let no_provider = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: custom, namespace: foo}
spec:
  action: CUSTOM
";
    let provider = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: foo}
spec:
  provider: {name: x}
";
    let loaded = load(&[custom, no_provider, provider]).unwrap();
    assert_eq!(
        lines(&loaded.unsupported),
        [
            "7:3: spec.action: AuthorizationPolicy istio-system/ext-authz: CUSTOM (external \
          authorization) is not supported; this policy is not enforced"
        ]
    );
    assert_eq!(
        lines(&loaded.rejected),
        [
            "17:3: spec.action: AuthorizationPolicy foo/custom: action CUSTOM needs \
             provider.name",
            "23:3: spec.provider: AuthorizationPolicy foo/allow: provider is only for action \
             CUSTOM",
        ]
    );
    let authz = &security(&loaded).authz;
    assert_eq!(authz.len(), 1);
    assert_eq!(authz[0].action, AuthzAction::Custom);
}

#[test]
fn root_namespace_selectors_cover_every_namespace() {
    let doc = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin-everywhere, namespace: istio-system}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules: [{}]
";
    let loaded = ok(&[doc]);
    let scopes: Vec<&Scope> = security(&loaded).authz.iter().map(|a| &a.scope).collect();
    assert_eq!(
        scopes,
        [
            &workload("istio-system", &[("app", "httpbin")]),
            &workload("foo", &[("app", "httpbin")]),
            &workload("bar", &[("app", "httpbin")]),
        ]
    );
    // With another root namespace, istio-system is a namespace like any other.
    let root = MESH.replace("spec:\n", "spec:\n  rootNamespace: mesh-root\n");
    let text = format!("{doc}---\n{root}");
    let loaded = load_str(Path::new("sec.yaml"), &text).unwrap();
    let s = security(&loaded);
    assert_eq!(s.root_namespace, "mesh-root");
    assert_eq!(s.authz.len(), 1);
    assert_eq!(
        s.authz[0].scope,
        workload("istio-system", &[("app", "httpbin")])
    );
}

#[test]
fn target_refs_to_the_ingress_gateway_select_it() {
    let gateway = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ingress, namespace: istio-system}
spec:
  targetRefs:
  - {kind: Gateway, group: gateway.networking.k8s.io, name: istio-ingressgateway}
  - {kind: Service, group: '', name: httpbin}
  action: DENY
  rules:
  - from:
    - source: {ipBlocks: [203.0.113.0/24]}
";
    let both = "\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: both, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  targetRef: {kind: Gateway, name: istio-ingressgateway}
";
    let loaded = load(&[gateway, both]).unwrap();
    let s = security(&loaded);
    assert_eq!(s.authz.len(), 1);
    assert_eq!(
        s.authz[0].scope,
        workload("istio-system", &[("istio", "ingressgateway")])
    );
    // The ingress carries these labels, in the root namespace.
    let ingress = labels(&[("istio", "ingressgateway"), ("app", "istio-ingressgateway")]);
    assert!(s.authz[0].scope.selects("istio-system", &ingress));
    assert_eq!(
        lines(&loaded.unsupported),
        [
            "7:6: spec.targetRefs[1]: AuthorizationPolicy istio-system/ingress: targetRef Service \
          httpbin: only the Gateway istio-ingressgateway (weft's ingress) can be targeted; this \
          target selects nothing"
        ]
    );
    assert_eq!(
        lines(&loaded.rejected),
        [
            "17:3: spec.selector: RequestAuthentication foo/both: set selector or targetRef(s), \
          not both, as Istio requires"
        ]
    );
}

// --- Istio RequestAuthentication ---------------------------------------------------------

#[test]
fn request_authentication_every_field() {
    // Istio's JWT task, then every JWTRule field.
    let task = "\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: \"jwt-example\"
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  jwtRules:
  - issuer: \"testing@secure.istio.io\"
    jwksUri: \"https://raw.githubusercontent.com/istio/istio/release-1.24/security/tools/jwt/samples/jwks.json\"
";
    let every = r#"
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {name: every, namespace: bar}
spec:
  jwtRules:
  - issuer: issuer-1
    audiences: [app, web]
    jwks: '{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}'
    fromHeaders:
    - {name: X-Jwt, prefix: 'Bearer '}
    - {name: x-other}
    fromParams: [token]
    fromCookies: [session]
    forwardOriginalToken: true
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders:
    - {header: X-Sub, claim: sub}
    - {header: x-group, claim: nested.key.group}
    timeout: 1.5s
"#;
    let loaded = ok(&[task, every.trim_start()]);
    assert_eq!(lines(&loaded.unsupported), Vec::<String>::new());
    assert_eq!(
        security(&loaded).request_authns,
        [
            RequestAuthn {
                name: "foo/jwt-example".into(),
                scope: workload("foo", &[("app", "httpbin")]),
                rules: vec![JwtRule {
                    issuer: "testing@secure.istio.io".into(),
                    jwks_uri: Some(
                        "https://raw.githubusercontent.com/istio/istio/release-1.24/security/\
                         tools/jwt/samples/jwks.json"
                            .into()
                    ),
                    ..JwtRule::default()
                }],
            },
            RequestAuthn {
                name: "bar/every".into(),
                scope: Scope::Namespace("bar".into()),
                rules: vec![JwtRule {
                    issuer: "issuer-1".into(),
                    audiences: strings(&["app", "web"]),
                    jwks: Some(ED25519_JWKS.into()),
                    jwks_uri: None,
                    from_headers: vec![
                        ("x-jwt".into(), "Bearer ".into()),
                        ("x-other".into(), String::new()),
                    ],
                    from_params: strings(&["token"]),
                    from_cookies: strings(&["session"]),
                    forward_original_token: true,
                    output_payload_to_header: Some("x-jwt-payload".into()),
                    output_claim_to_headers: vec![
                        ("x-sub".into(), "sub".into()),
                        ("x-group".into(), "nested.key.group".into()),
                    ],
                    timeout_ms: Some(1500),
                }],
            },
        ]
    );
}

#[test]
fn request_authentication_errors_and_notices() {
    let bad = "\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: bad, namespace: foo}
spec:
  jwtRules:
  - issuer: a
    jwks: 'not json'
  - issuer: b
    jwks: '{\"key\": []}'
  - jwksUri: ftp://example.com/jwks
  - issuer: c
    jwksUri: https://example.com/jwks
    timeout: soon
    outputClaimToHeaders:
    - {header: 'bad header', claim: sub}
    - {header: x-a, claim: ''}
";
    let noted = "\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: noted, namespace: foo}
spec:
  jwtRules:
  - issuer: both
    jwks: '{\"keys\": [{\"kty\": \"OKP\", \"crv\": \"Ed25519\", \"x\": \"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}]}'
    jwksUri: https://example.com/jwks
  - issuer: neither
";
    let loaded = load(&[bad, noted]).unwrap();
    assert_eq!(
        lines(&loaded.rejected),
        [
            "7:5: spec.jwtRules[0].jwks: RequestAuthentication foo/bad: the JWKS is not JSON: \
             expected ident at line 1 column 2",
            "9:5: spec.jwtRules[1].jwks: RequestAuthentication foo/bad: the JWKS has no `keys` \
             list",
            "10:5: spec.jwtRules[2].issuer: RequestAuthentication foo/bad: issuer must be set",
            "10:5: spec.jwtRules[2].jwksUri: RequestAuthentication foo/bad: \
             `ftp://example.com/jwks` is not an http:// or https:// URL with a host",
            "15:8: spec.jwtRules[3].outputClaimToHeaders[0].header: RequestAuthentication \
             foo/bad: `bad header` is not a header name",
            "16:21: spec.jwtRules[3].outputClaimToHeaders[1].claim: RequestAuthentication \
             foo/bad: must not be empty",
            "13:5: spec.jwtRules[3].timeout: RequestAuthentication foo/bad: `soon` is not a \
             duration like 1s, 0.5s, 100ms or 1m",
        ]
    );
    assert_eq!(
        lines(&loaded.unsupported),
        [
            "25:5: spec.jwtRules[0].jwksUri: RequestAuthentication foo/noted: jwksUri is \
             ignored when jwks is set, as in Istio",
            "26:5: spec.jwtRules[1].issuer: RequestAuthentication foo/noted: neither jwks nor \
             jwksUri is set, and finding the keys of `neither` by OpenID Connect discovery is \
             not yet supported: its tokens will fail verification",
        ]
    );
    assert_eq!(security(&loaded).request_authns.len(), 1);
}

// --- Linkerd ------------------------------------------------------------------------------

const SERVER: &str = "\
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata:
  name: httpbin-http
  namespace: foo
  labels: {tier: web}
spec:
  podSelector:
    matchLabels: {app: httpbin}
  port: 8000
  proxyProtocol: HTTP/1
  accessPolicy: all-authenticated
";

#[test]
fn linkerd_authorization_policies_and_authentications() {
    // The shapes of Linkerd's authorization-policy reference and its emojivoto task.
    let mtls = "\
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: sleep-authn, namespace: foo}
spec:
  identities:
  - sleep.foo.serviceaccount.identity.linkerd.cluster.local
  identityRefs:
  - {kind: ServiceAccount, name: curl}
  - {kind: Namespace, name: bar}
";
    let network = "\
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {name: cluster, namespace: foo}
spec:
  networks:
  - cidr: 10.0.0.0/8
    except: [10.0.1.0/24]
  - cidr: 127.0.0.1
";
    let policy = "\
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: httpbin-sleep, namespace: foo}
spec:
  targetRef:
    group: policy.linkerd.io
    kind: Server
    name: httpbin-http
  requiredAuthenticationRefs:
  - name: sleep-authn
    kind: MeshTLSAuthentication
    group: policy.linkerd.io
  - {name: cluster, kind: NetworkAuthentication, group: policy.linkerd.io}
";
    let by_service_account = "\
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: namespace-web, namespace: foo}
spec:
  targetRef: {kind: Namespace, name: foo}
  requiredAuthenticationRefs:
  - {kind: ServiceAccount, name: web, namespace: bar}
";
    let open = "\
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: open, namespace: foo}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: httpbin-http}
  requiredAuthenticationRefs: []
";
    let loaded = ok(&[SERVER, mtls, network, policy, by_service_account, open]);
    assert_eq!(lines(&loaded.unsupported), Vec::<String>::new());
    let s = security(&loaded);
    assert_eq!(
        s.servers,
        [LinkerdServer {
            name: "foo/httpbin-http".into(),
            scope: workload("foo", &[("app", "httpbin")]),
            port: Some(8000),
            access_policy: DefaultPolicy::AllAuthenticated,
            routes: vec![],
        }]
    );
    assert_eq!(
        s.linkerd_authz,
        [
            LinkerdAuthz {
                name: "AuthorizationPolicy foo/httpbin-sleep".into(),
                target: LinkerdTarget::Server("foo/httpbin-http".into()),
                authns: vec![
                    LinkerdAuthn::MeshTls {
                        identities: strings(&[
                            "sleep.foo.serviceaccount.identity.linkerd.cluster.local",
                            "spiffe://cluster.local/ns/foo/sa/curl",
                            "*.bar.serviceaccount.identity.linkerd.cluster.local",
                        ]),
                    },
                    LinkerdAuthn::Network {
                        cidrs: strings(&["10.0.0.0/8", "127.0.0.1"]),
                        except: strings(&["10.0.1.0/24"]),
                    },
                ],
            },
            LinkerdAuthz {
                name: "AuthorizationPolicy foo/namespace-web".into(),
                target: LinkerdTarget::Namespace("foo".into()),
                authns: vec![LinkerdAuthn::MeshTls {
                    identities: strings(&["spiffe://cluster.local/ns/bar/sa/web"]),
                }],
            },
            LinkerdAuthz {
                name: "AuthorizationPolicy foo/open".into(),
                target: LinkerdTarget::Server("foo/httpbin-http".into()),
                authns: vec![],
            },
        ]
    );
}

#[test]
fn a_policy_naming_a_missing_authentication_is_rejected_alone() {
    let missing = "\
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: missing, namespace: foo}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: httpbin-http}
  requiredAuthenticationRefs:
  - {name: nobody, kind: MeshTLSAuthentication, group: policy.linkerd.io}
";
    let bad_refs = "\
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: bad-refs, namespace: foo}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: httpbin-http}
  requiredAuthenticationRefs:
  - {name: a, kind: ServiceAccount}
  - {name: b, kind: ServiceAccount}
  - {name: c, kind: Secret}
";
    let other_namespace = "\
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: other, namespace: foo}
spec:
  targetRef: {kind: Namespace, name: bar}
";
    let loaded = load(&[SERVER, missing, bad_refs, other_namespace]).unwrap();
    assert_eq!(
        lines(&loaded.rejected),
        [
            "20:6: spec.requiredAuthenticationRefs[0].name: AuthorizationPolicy.policy.linkerd.io \
             foo/missing: MeshTLSAuthentication foo/nobody is not declared (or was rejected)",
            "27:3: spec.requiredAuthenticationRefs: AuthorizationPolicy.policy.linkerd.io \
             foo/bad-refs: only a single ServiceAccount may be set",
            "30:15: spec.requiredAuthenticationRefs[2].kind: \
             AuthorizationPolicy.policy.linkerd.io foo/bad-refs: unsupported authentication \
             kind Secret: MeshTLSAuthentication, NetworkAuthentication or ServiceAccount",
            "36:32: spec.targetRef.name: AuthorizationPolicy.policy.linkerd.io foo/other: cannot \
             target another namespace: bar",
        ]
    );
    // The Server applies; so does the policy store's key for the grouped kind.
    assert_eq!(security(&loaded).servers.len(), 1);
    assert!(security(&loaded).linkerd_authz.is_empty());
    assert_eq!(
        loaded
            .rejected_for("AuthorizationPolicy.policy.linkerd.io", "foo", "missing")
            .count(),
        1
    );
}

#[test]
fn servers_ports_selectors_and_protocols() {
    let named = "\
apiVersion: policy.linkerd.io/v1beta2
kind: Server
metadata: {name: foo-http, namespace: foo}
spec:
  podSelector:
    matchLabels: {}
    matchExpressions:
    - {key: app, operator: In, values: [httpbin, sleep]}
  port: http
  proxyProtocol: opaque
";
    let external = "\
apiVersion: policy.linkerd.io/v1beta2
kind: Server
metadata: {name: vm, namespace: foo}
spec:
  externalWorkloadSelector: {matchLabels: {app: vm}}
  port: 8000
";
    let wrong_port = "\
apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata: {name: admin, namespace: bar}
spec:
  podSelector: {matchLabels: {app: httpbin}}
  port: 9990
";
    let bad = "\
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: bad, namespace: foo}
spec:
  podSelector: {matchLabels: {app: httpbin}}
  port: 70000
  proxyProtocol: HTTP/3
";
    let loaded = load(&[named, external, wrong_port, bad]).unwrap();
    assert_eq!(
        lines(&loaded.unsupported),
        [
            "7:5: spec.podSelector.matchExpressions: Server.policy.linkerd.io foo/foo-http: \
             podSelector.matchExpressions is not yet supported; ignored (the Server selects by \
             matchLabels alone)",
            "10:3: spec.proxyProtocol: Server.policy.linkerd.io foo/foo-http: proxyProtocol \
             opaque is not yet supported; weft detects the protocol",
            "9:3: spec.port: Server.policy.linkerd.io foo/foo-http: port name `http`: weft \
             workloads have one port, their service's, so the name means it; the workloads this \
             Server selects serve on different ports (httpbin: 8000, sleep: 80)",
            "16:3: spec.externalWorkloadSelector: Server.policy.linkerd.io foo/vm: \
             externalWorkloadSelector: weft has no external workloads; this Server selects \
             nothing",
            "24:3: spec.port: Server.policy.linkerd.io bar/admin: port 9990 is not the port of \
             a workload this Server selects (httpbin: 8000); it covers nothing",
        ]
    );
    assert_eq!(
        lines(&loaded.rejected),
        [
            "31:3: spec.port: Server.policy.linkerd.io foo/bad: port 70000 must be between 1 \
             and 65535",
            "32:3: spec.proxyProtocol: Server.policy.linkerd.io foo/bad: unknown proxyProtocol \
             `HTTP/3`: unknown, HTTP/1, HTTP/2, gRPC, opaque or TLS",
        ]
    );
    let servers = &security(&loaded).servers;
    assert_eq!(servers.len(), 2);
    assert_eq!(servers[0].port, None);
    assert_eq!(
        servers[0].access_policy,
        DefaultPolicy::Deny,
        "Linkerd's default"
    );
    assert_eq!(servers[1].port, Some(9990));
}

#[test]
fn server_authorizations() {
    let by_name = "\
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: sleep-to-httpbin, namespace: foo}
spec:
  server:
    name: httpbin-http
  client:
    networks:
    - cidr: 10.0.0.0/8
      except: [10.0.0.1]
    meshTLS:
      identities: ['*.foo.serviceaccount.identity.linkerd.cluster.local']
      serviceAccounts:
      - name: sleep
      - {name: web, namespace: bar}
";
    let by_selector = "\
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: probes, namespace: foo}
spec:
  server:
    selector: {matchLabels: {tier: web}}
  client:
    unauthenticated: true
";
    let tls = "\
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: tls, namespace: foo}
spec:
  server: {name: httpbin-http}
  client:
    meshTLS: {unauthenticatedTLS: true}
";
    let bad = "\
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: bad, namespace: foo}
spec:
  server: {name: httpbin-http}
  client:
    unauthenticated: true
    meshTLS: {identities: [a]}
    networks:
    - {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}
    - {cidr: 10.2.0.0/16, except: [10.0.0.0/8]}
";
    let loaded = load(&[SERVER, by_name, by_selector, tls, bad]).unwrap();
    assert_eq!(
        lines(&loaded.rejected),
        [
            "56:36: spec.client.networks[0].except[0]: ServerAuthorization.policy.linkerd.io \
             foo/bad: cidr `10.0.0.0/16` does not include exception `10.1.0.0/24`",
            "57:36: spec.client.networks[1].except[0]: ServerAuthorization.policy.linkerd.io \
             foo/bad: cidr `10.2.0.0/16` is completely negated by exception `10.0.0.0/8`",
            "53:5: spec.client.unauthenticated: ServerAuthorization.policy.linkerd.io foo/bad: \
             `unauthenticated` must be false if `meshTLS` is specified",
        ]
    );
    assert_eq!(
        lines(&loaded.unsupported),
        [
            "45:15: spec.client.meshTLS.unauthenticatedTLS: ServerAuthorization.policy.linkerd.io \
          foo/tls: unauthenticatedTLS is not yet supported: weft requires a client identity \
          here (any: `*`)"
        ]
    );
    let server = LinkerdTarget::Server("foo/httpbin-http".into());
    assert_eq!(
        security(&loaded).linkerd_authz,
        [
            LinkerdAuthz {
                name: "ServerAuthorization foo/sleep-to-httpbin".into(),
                target: server.clone(),
                authns: vec![
                    LinkerdAuthn::Network {
                        cidrs: strings(&["10.0.0.0/8"]),
                        except: strings(&["10.0.0.1"]),
                    },
                    LinkerdAuthn::MeshTls {
                        identities: strings(&[
                            "*.foo.serviceaccount.identity.linkerd.cluster.local",
                            "spiffe://cluster.local/ns/foo/sa/sleep",
                            "spiffe://cluster.local/ns/bar/sa/web",
                        ]),
                    },
                ],
            },
            LinkerdAuthz {
                name: "ServerAuthorization foo/probes".into(),
                target: server.clone(),
                authns: vec![LinkerdAuthn::Unauthenticated],
            },
            LinkerdAuthz {
                name: "ServerAuthorization foo/tls".into(),
                target: server,
                authns: vec![LinkerdAuthn::MeshTls {
                    identities: strings(&["*"]),
                }],
            },
        ]
    );
}

#[test]
fn inbound_routes_attach_to_their_server_and_can_be_authorized() {
    let route = "\
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {name: httpbin-get, namespace: foo}
spec:
  parentRefs:
  - {group: policy.linkerd.io, kind: Server, name: httpbin-http}
  rules:
  - matches:
    - path: {type: PathPrefix, value: /get}
      method: GET
    - path: {type: Exact, value: /headers}
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x, value: y}]}
";
    let policy = "\
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: foo}
spec:
  targetRef: {group: policy.linkerd.io, kind: HTTPRoute, name: httpbin-get}
  requiredAuthenticationRefs:
  - {kind: ServiceAccount, name: sleep}
";
    let stray = "\
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: stray, namespace: foo}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: nowhere}
";
    let bad_match = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad, namespace: foo}
spec:
  parentRefs:
  - {group: policy.linkerd.io, kind: Server, name: httpbin-http}
  rules:
  - matches:
    - path: {type: RegularExpression, value: '(['}
";
    let loaded = load(&[SERVER, route, policy, stray, bad_match]).unwrap();
    assert_eq!(
        lines(&loaded.rejected),
        [
            "51:39: spec.rules[0].matches[0].path.value: HTTPRoute foo/bad: invalid regex: regex \
          parse error: ([ ^ error: unclosed character class"
        ]
    );
    assert_eq!(
        lines(&loaded.unsupported),
        [
            "25:5: spec.rules[0].filters: HTTPRoute.policy.linkerd.io foo/httpbin-get: filters \
             are not yet supported on an inbound route (Server parent); ignored there",
            "41:3: spec.targetRef: AuthorizationPolicy.policy.linkerd.io foo/stray: HTTPRoute \
             foo/nowhere is not an inbound route (one with a Server parent); this policy \
             applies to nothing",
        ]
    );
    let s = security(&loaded);
    assert_eq!(
        s.servers[0].routes,
        [(
            "foo/httpbin-get".to_string(),
            vec![
                RouteMatch {
                    path: Some(PathMatch::SegmentPrefix("/get".into())),
                    method: Some("GET".into()),
                    ..RouteMatch::default()
                },
                RouteMatch {
                    path: Some(PathMatch::Exact("/headers".into())),
                    ..RouteMatch::default()
                },
            ]
        )]
    );
    assert_eq!(
        s.linkerd_authz[0].target,
        LinkerdTarget::Route("foo/httpbin-get".into())
    );
    // An inbound-only route routes nothing outbound.
    assert!(loaded.mesh.as_ref().unwrap().routes.is_empty());
}

// --- Defaults, namespaces, sidecars -----------------------------------------------------

#[test]
fn default_inbound_policies_from_mesh_namespaces_and_services() {
    let mesh = MESH
        .replace(
            "spec:\n",
            "spec:\n  defaultInboundPolicy: cluster-authenticated\n  rootNamespace: mesh-root\n",
        )
        .replace(
            "  - name: sleep\n    namespace: foo\n",
            "  - name: sleep\n    namespace: foo\n    annotations:\n      \
             config.linkerd.io/default-inbound-policy: all-unauthenticated\n",
        );
    let namespace = "\
apiVersion: v1
kind: Namespace
metadata:
  name: bar
  labels: {istio-injection: enabled}
  annotations:
    config.linkerd.io/default-inbound-policy: deny
";
    let text = format!("{namespace}---\n{mesh}");
    let loaded = load_str(Path::new("sec.yaml"), &text).unwrap();
    assert_eq!(lines(&loaded.rejected), Vec::<String>::new());
    assert_eq!(lines(&loaded.unsupported), Vec::<String>::new());
    let s = security(&loaded);
    assert_eq!(s.root_namespace, "mesh-root");
    assert_eq!(
        s.default_inbound_policy,
        DefaultPolicy::ClusterAuthenticated
    );
    assert_eq!(
        s.default_policy_overrides,
        [
            (Scope::Namespace("bar".into()), DefaultPolicy::Deny),
            (
                workload("foo", &[("app", "sleep")]),
                DefaultPolicy::AllUnauthenticated
            ),
        ]
    );
    let app = |a: &str| labels(&[("app", a)]);
    assert_eq!(
        s.default_policy("foo", &app("sleep")),
        DefaultPolicy::AllUnauthenticated
    );
    assert_eq!(
        s.default_policy("bar", &app("httpbin")),
        DefaultPolicy::Deny
    );
    assert_eq!(
        s.default_policy("foo", &app("httpbin")),
        DefaultPolicy::ClusterAuthenticated
    );
}

#[test]
fn bad_default_policies_are_located() {
    // In a Mesh document: fatal, as every Mesh error.
    let mesh = MESH
        .replace("spec:\n", "spec:\n  defaultInboundPolicy: open\n")
        .replace(
            "  - name: sleep\n    namespace: foo\n",
            "  - name: sleep\n    namespace: foo\n    annotations:\n      \
             config.linkerd.io/default-inbound-policy: allow\n",
        );
    let Err(Errors(errors)) = load_str(Path::new("sec.yaml"), &mesh) else {
        panic!("accepted");
    };
    assert_eq!(
        lines(&errors),
        [
            "5:3: spec.defaultInboundPolicy: unknown variant `open`, expected one of \
          `all-unauthenticated`, `all-authenticated`, `cluster-authenticated`, \
          `cluster-unauthenticated`, `deny`, `audit`"
        ]
    );
    let mesh = MESH.replace(
        "  - name: sleep\n    namespace: foo\n",
        "  - name: sleep\n    namespace: foo\n    annotations:\n      \
         config.linkerd.io/default-inbound-policy: allow\n",
    );
    let Err(Errors(errors)) = load_str(Path::new("sec.yaml"), &mesh) else {
        panic!("accepted");
    };
    assert_eq!(
        lines(&errors),
        ["19:7: spec.services[2].annotations[config.linkerd.io/default-inbound-policy]: service \
          sleep.foo: annotation config.linkerd.io/default-inbound-policy: `allow` is not a \
          default inbound policy: all-unauthenticated, all-authenticated, \
          cluster-authenticated, cluster-unauthenticated, deny or audit"]
    );
    // On a Namespace: that Namespace is rejected, through the store as `weft apply` does.
    let namespace = "\
apiVersion: v1
kind: Namespace
metadata:
  name: bar
  annotations: {config.linkerd.io/default-inbound-policy: nobody}
";
    let store = Store::default().applied(resources(Path::new("sec.yaml"), &file(&[namespace])));
    assert_eq!(
        store.resources[0].namespace, "",
        "a Namespace is cluster-scoped"
    );
    let loaded = store.load().unwrap();
    assert_eq!(
        lines(&loaded.rejected),
        [
            "5:17: metadata.annotations[config.linkerd.io/default-inbound-policy]: Namespace bar: \
          annotation config.linkerd.io/default-inbound-policy: `nobody` is not a default \
          inbound policy: all-unauthenticated, all-authenticated, cluster-authenticated, \
          cluster-unauthenticated, deny or audit"
        ]
    );
    assert_eq!(loaded.rejected_for("Namespace", "", "bar").count(), 1);
    assert!(security(&loaded).default_policy_overrides.is_empty());
}

#[test]
fn mesh_documents_must_agree_on_the_root_namespace() {
    let other = "\
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec:
  rootNamespace: mesh-root
---
apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec:
  rootNamespace: Other
  defaultInboundPolicy: deny
";
    let Err(Errors(errors)) = load_str(Path::new("sec.yaml"), other) else {
        panic!("accepted");
    };
    assert_eq!(
        lines(&errors),
        [
            "11:3: spec.rootNamespace: `Other` is not a valid name: use at most 63 lowercase \
             letters, digits and '-', starting and ending with a letter or digit",
            "11:3: spec.rootNamespace: root namespace Other conflicts with root namespace \
             mesh-root set at sec.yaml:5",
        ]
    );
}

#[test]
fn workloads_without_a_sidecar() {
    let loaded = ok(&[]);
    let mesh = loaded.mesh.unwrap();
    let sidecar = |svc: usize| mesh.services[svc].workloads[0].sidecar;
    assert!(sidecar(0), "the default");
    assert!(!sidecar(3));
    // A root-namespace selector does not reach them: they have no proxy.
    let doc = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: sleep, namespace: istio-system}
spec:
  selector: {matchLabels: {app: sleep}}
";
    let loaded = ok(&[doc]);
    let scopes: Vec<&Scope> = security(&loaded).authz.iter().map(|a| &a.scope).collect();
    assert_eq!(
        scopes,
        [
            &workload("istio-system", &[("app", "sleep")]),
            &workload("foo", &[("app", "sleep")]),
        ]
    );
}

// --- Rejection mechanics ------------------------------------------------------------------

#[test]
fn unparsable_and_duplicate_resources_are_rejected_alone() {
    let typo = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: typo, namespace: foo}
spec:
  rulez: []
";
    let server_typo = "\
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: typo, namespace: foo}
spec:
  podSelector: {matchLabels: {app: httpbin}}
  prot: 8000
";
    let namespace_typo = "\
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
spek: {}
";
    let first = "\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: STRICT}}
";
    let second = first.replace("STRICT", "DISABLE");
    let loaded = load(&[typo, server_typo, namespace_typo, first, &second]).unwrap();
    assert_eq!(
        lines(&loaded.rejected),
        [
            "5:3: spec.rulez: AuthorizationPolicy foo/typo: unknown field `rulez`, expected one \
             of `selector`, `targetRef`, `targetRefs`, `rules`, `action`, `provider`",
            "12:3: spec.prot: Server.policy.linkerd.io foo/typo: unknown field `prot`, expected \
             one of `podSelector`, `externalWorkloadSelector`, `port`, `proxyProtocol`, \
             `accessPolicy`",
            "17:1: spek: Namespace legacy: unknown field `spek`, expected one of `apiVersion`, \
             `kind`, `metadata`, `spec`, `status`",
            "26:12: metadata.name: PeerAuthentication foo/default: defined twice; the first, at \
             sec.yaml:21, applies",
        ]
    );
    let s = security(&loaded);
    assert_eq!(s.peer_authns.len(), 1);
    assert_eq!(s.peer_authns[0].mode, MtlsMode::Strict);
}

#[test]
fn security_resources_round_trip_through_the_store() {
    // `weft apply` keys: Istio's AuthorizationPolicy and Linkerd's are different resources.
    let istio = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: same, namespace: foo}
spec: {}
";
    let linkerd = "\
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: same, namespace: foo}
spec:
  targetRef: {kind: Namespace, name: foo}
";
    let store =
        Store::default().applied(resources(Path::new("sec.yaml"), &file(&[istio, linkerd])));
    assert_eq!(store.resources.len(), 3);
    let loaded = store.load().unwrap();
    let s = security(&loaded);
    assert_eq!(s.authz.len(), 1);
    assert_eq!(s.linkerd_authz.len(), 1);
}

/// A JWKS with one Ed25519 key (RFC 8037's example): keys a proxy can verify tokens with.
const ED25519_JWKS: &str = r#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
