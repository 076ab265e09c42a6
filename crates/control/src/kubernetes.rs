//! Kubernetes: what the control plane may read and write in a cluster ([`CLUSTER_ACCESS`],
//! [`NAMESPACE_ACCESS`]: one list, from which the RBAC rules are made and which the docs
//! print), the manifests `weft install --kubernetes` prints ([`manifests`]), [`tokens`]:
//! proxies' ServiceAccount tokens checked by TokenReview, and [`ca_bundle`]: the injection
//! webhook's `caBundle` kept the mesh's roots, [`ca_roots`]: the roots in every namespace
//! for injected pods, [`cluster`]: the cluster's services, endpoints and mesh resources
//! watched into the registry (and routes' status written back), [`ca_secret`]: the CA's root
//! shared by the replicas, and [`lease`]: which replica writes.

pub mod ca_bundle;
pub mod ca_roots;
pub mod ca_secret;
pub mod cluster;
pub mod lease;
pub mod tokens;

use std::fmt::Write as _;

/// The one client of the Kubernetes API a control plane uses for everything it asks of it
/// (watches, TokenReviews, its writes), made when first needed.
pub struct ApiClient {
    url: Option<String>,
    client: tokio::sync::OnceCell<kube::Client>,
}

impl ApiClient {
    /// A client of the API server at `url` (`None`: the cluster this runs in, or
    /// `$KUBECONFIG`'s).
    pub fn new(url: Option<String>) -> ApiClient {
        ApiClient {
            url,
            client: tokio::sync::OnceCell::new(),
        }
    }

    pub async fn get(&self) -> Result<kube::Client, String> {
        self.client
            .get_or_try_init(|| tokens::client(self.url.as_deref()))
            .await
            .cloned()
    }
}

/// Access to some resources of one API group, and why the control plane needs it.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    pub group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// Only these objects (empty: any).
    pub names: &'static [&'static str],
    pub why: &'static str,
}

const READ: &[&str] = &["get", "list", "watch"];

/// The MutatingWebhookConfiguration that sends pod creations to the control plane.
pub const WEBHOOK_NAME: &str = "weft-sidecar-injector";
/// The Lease replicas elect their writer with.
pub const LEASE_NAME: &str = "weft-control";

/// Cluster-wide access (a ClusterRole).
pub const CLUSTER_ACCESS: &[Access] = &[
    Access {
        group: "",
        resources: &["namespaces", "services", "pods"],
        verbs: READ,
        names: &[],
        why: "the registry: services, their pods (labels, service account, IP, readiness) and which namespaces opt into injection",
    },
    Access {
        group: "discovery.k8s.io",
        resources: &["endpointslices"],
        verbs: READ,
        names: &[],
        why: "the endpoints of every service",
    },
    Access {
        group: "",
        resources: &["configmaps"],
        verbs: &["get", "list", "watch", "create", "update"],
        names: &[],
        why: "the mesh's roots (ConfigMap weft-ca-root) in every namespace with injected pods",
    },
    Access {
        group: "authentication.k8s.io",
        resources: &["tokenreviews"],
        verbs: &["create"],
        names: &[],
        why: "a proxy's ServiceAccount token checked before its identity is signed",
    },
    Access {
        group: "networking.istio.io",
        resources: &[
            "virtualservices",
            "destinationrules",
            "gateways",
            "sidecars",
            "serviceentries",
        ],
        verbs: READ,
        names: &[],
        why: "Istio traffic management",
    },
    Access {
        group: "networking.istio.io",
        resources: &["virtualservices", "destinationrules"],
        verbs: &["create", "update", "patch"],
        names: &[],
        why: "the canary controller moves the weights of the routes it owns (and makes the route and subsets of a service that has none)",
    },
    Access {
        group: "security.istio.io",
        resources: &[
            "peerauthentications",
            "authorizationpolicies",
            "requestauthentications",
        ],
        verbs: READ,
        names: &[],
        why: "Istio security",
    },
    Access {
        group: "gateway.networking.k8s.io",
        resources: &["gateways", "httproutes", "grpcroutes", "referencegrants"],
        verbs: READ,
        names: &[],
        why: "Gateway API routes",
    },
    Access {
        group: "gateway.networking.k8s.io",
        resources: &["httproutes"],
        verbs: &["update", "patch"],
        names: &[],
        why: "the canary controller moves the weights of the routes it owns",
    },
    Access {
        group: "gateway.networking.k8s.io",
        resources: &["gateways/status", "httproutes/status", "grpcroutes/status"],
        verbs: &["update", "patch"],
        names: &[],
        why: "the Accepted and ResolvedRefs conditions Gateway API expects",
    },
    Access {
        group: "policy.linkerd.io",
        resources: &[
            "servers",
            "serverauthorizations",
            "authorizationpolicies",
            "meshtlsauthentications",
            "networkauthentications",
            "httproutes",
        ],
        verbs: READ,
        names: &[],
        why: "Linkerd policy and routes",
    },
    Access {
        group: "linkerd.io",
        resources: &["serviceprofiles"],
        verbs: READ,
        names: &[],
        why: "Linkerd ServiceProfiles",
    },
    Access {
        group: "split.smi-spec.io",
        resources: &["trafficsplits"],
        verbs: &["get", "list", "watch", "update", "patch"],
        names: &[],
        why: "SMI TrafficSplits (the canary controller moves the weights of those it owns)",
    },
    Access {
        group: "weft.dev",
        resources: &["canaries"],
        verbs: &["get", "list", "watch", "update", "patch"],
        names: &[],
        why: "progressive rollouts and their state",
    },
    Access {
        group: "admissionregistration.k8s.io",
        resources: &["mutatingwebhookconfigurations"],
        verbs: &["get", "update", "patch"],
        names: &[WEBHOOK_NAME],
        why: "the injection webhook's CA bundle, kept current by the control plane",
    },
];

/// Access in the control plane's own namespace (a Role there).
pub const NAMESPACE_ACCESS: &[Access] = &[
    Access {
        group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["get", "create", "update"],
        names: &[],
        why: "leader election among replicas: one writer of status and rollouts",
    },
    Access {
        group: "",
        resources: &["secrets"],
        verbs: &["get", "create", "update"],
        names: &[],
        why: "the mesh CA's root and the webhook's serving certificate, kept across restarts",
    },
];

/// What `weft install --kubernetes` fills in.
#[derive(Clone, Debug)]
pub struct Install {
    /// The weft container image (`REGISTRY/weft:TAG`): the user's.
    pub image: String,
    pub namespace: String,
    pub replicas: u32,
    pub trust_domain: String,
    pub image_pull_policy: String,
}

impl Install {
    /// The defaults, for `image`.
    pub fn new(image: &str) -> Install {
        Install {
            image: image.into(),
            namespace: model::names::CONTROL_NAMESPACE.into(),
            replicas: 2,
            trust_domain: model::names::TRUST_DOMAIN.into(),
            image_pull_policy: "IfNotPresent".into(),
        }
    }

    /// `--set KEY=VALUE`: `image`, `namespace`, `replicas`, `trustDomain`, `imagePullPolicy`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "image" => self.image = value.into(),
            "namespace" => self.namespace = value.into(),
            "replicas" => {
                self.replicas =
                    value.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        format!("replicas: `{value}` is not a number of 1 or more")
                    })?
            }
            "trustDomain" => self.trust_domain = value.into(),
            "imagePullPolicy" => match value {
                "Always" | "IfNotPresent" | "Never" => self.image_pull_policy = value.into(),
                _ => {
                    return Err(format!(
                        "imagePullPolicy: `{value}` is not Always, IfNotPresent or Never"
                    ))
                }
            },
            _ => {
                return Err(format!(
                    "no setting `{key}`: image, namespace, replicas, trustDomain, imagePullPolicy"
                ))
            }
        }
        Ok(())
    }
}

/// The RBAC rules of `access`, as YAML list items.
fn rules(access: &[Access]) -> String {
    let mut out = String::new();
    for a in access {
        let _ = writeln!(out, "# {}", a.why);
        let _ = writeln!(out, "- apiGroups: [\"{}\"]", a.group);
        let _ = writeln!(out, "  resources: [{}]", a.resources.join(", "));
        if !a.names.is_empty() {
            let _ = writeln!(out, "  resourceNames: [{}]", a.names.join(", "));
        }
        let _ = writeln!(out, "  verbs: [{}]", a.verbs.join(", "));
    }
    out
}

/// The manifests: namespace, ServiceAccount, RBAC, the Canary CRD, the control plane's
/// Deployment (with a PodDisruptionBudget) and Service, and the injection webhook.
pub fn manifests(i: &Install) -> String {
    let Install {
        image,
        namespace: ns,
        replicas,
        trust_domain,
        image_pull_policy,
    } = i;
    let account = model::names::CONTROL_ACCOUNT;
    let labels = "app.kubernetes.io/name: weft\n    app.kubernetes.io/component: control-plane";
    let cluster_rules = rules(CLUSTER_ACCESS);
    let ns_rules = rules(NAMESPACE_ACCESS);
    format!(
        r#"# weft's control plane for Kubernetes: `weft install --kubernetes` (weft {version}).
# Istio, Gateway API, Linkerd and SMI CustomResourceDefinitions are not here: install them from
# their own releases (the control plane reads whichever exist).
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
  labels:
    istio-injection: disabled
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {account}
  namespace: {ns}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {account}
rules:
{cluster_rules}---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {account}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {account}
subjects:
- kind: ServiceAccount
  name: {account}
  namespace: {ns}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {account}
  namespace: {ns}
rules:
{ns_rules}---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {account}
  namespace: {ns}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {account}
subjects:
- kind: ServiceAccount
  name: {account}
  namespace: {ns}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: canaries.weft.dev
spec:
  group: weft.dev
  scope: Namespaced
  names:
    kind: Canary
    plural: canaries
    singular: canary
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources:
      status: {{}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-preserve-unknown-fields: true
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {account}
  namespace: {ns}
  labels:
    {labels}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app.kubernetes.io/name: weft
      app.kubernetes.io/component: control-plane
  template:
    metadata:
      labels:
        {labels_pod}
    spec:
      serviceAccountName: {account}
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: {{type: RuntimeDefault}}
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              topologyKey: kubernetes.io/hostname
              labelSelector:
                matchLabels:
                  app.kubernetes.io/name: weft
                  app.kubernetes.io/component: control-plane
      containers:
      - name: control
        image: {image}
        imagePullPolicy: {image_pull_policy}
        args:
        - control
        - --kubernetes
        - --listen
        - 0.0.0.0:15010
        - --api
        - 0.0.0.0:15014
        - --service-account-tokens
        - --ca-root-configmaps
        - --webhook
        - 0.0.0.0:15017
        - --webhook-configuration
        - {webhook}
        - --webhook-dns
        - {account}.{ns}.svc
        - --webhook-dns
        - {account}.{ns}.svc.cluster.local
        - --inject-image
        - {image}
        - --inject-control
        - {account}.{ns}.svc:15010
        - --trust-domain
        - {trust_domain}
        env:
        - name: WEFT_POD_NAME
          valueFrom:
            fieldRef: {{fieldPath: metadata.name}}
        - name: WEFT_POD_NAMESPACE
          valueFrom:
            fieldRef: {{fieldPath: metadata.namespace}}
        # The control plane's own files (its API credential, its record): the root filesystem
        # is read-only.
        - name: WEFT_HOME
          value: /var/run/weft
        volumeMounts:
        - {{name: weft-home, mountPath: /var/run/weft}}
        ports:
        - {{name: grpc-xds, containerPort: 15010}}
        - {{name: http-api, containerPort: 15014}}
        - {{name: https-webhook, containerPort: 15017}}
        readinessProbe:
          httpGet: {{path: /healthz, port: 15014}}
          periodSeconds: 2
        livenessProbe:
          httpGet: {{path: /healthz, port: 15014}}
          periodSeconds: 10
        resources:
          requests: {{cpu: 100m, memory: 128Mi}}
          limits: {{memory: 1Gi}}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {{drop: [ALL]}}
      volumes:
      - name: weft-home
        emptyDir: {{medium: Memory}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {account}
  namespace: {ns}
spec:
  minAvailable: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: weft
      app.kubernetes.io/component: control-plane
---
apiVersion: v1
kind: Service
metadata:
  name: {account}
  namespace: {ns}
  labels:
    {labels}
spec:
  selector:
    app.kubernetes.io/name: weft
    app.kubernetes.io/component: control-plane
  ports:
  - {{name: grpc-xds, port: 15010, targetPort: 15010}}
  - {{name: http-api, port: 15014, targetPort: 15014}}
  - {{name: https-webhook, port: 443, targetPort: 15017}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: {webhook}
webhooks:
# Namespaces labelled istio-injection=enabled (Istio's convention): every pod not opted out is
# injected. Pods elsewhere go to the second hook, which injects those that opt in.
- name: namespace.sidecar-injector.weft.dev
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  reinvocationPolicy: Never
  timeoutSeconds: 10
  clientConfig:
    service: {{name: {account}, namespace: {ns}, path: /inject/namespace, port: 443}}
  rules:
  - operations: [CREATE]
    apiGroups: [""]
    apiVersions: [v1]
    resources: [pods]
  namespaceSelector:
    matchLabels: {{istio-injection: enabled}}
  objectSelector:
    matchExpressions:
    - {{key: sidecar.istio.io/inject, operator: NotIn, values: ["false"]}}
- name: object.sidecar-injector.weft.dev
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Ignore
  reinvocationPolicy: Never
  timeoutSeconds: 10
  clientConfig:
    service: {{name: {account}, namespace: {ns}, path: /inject, port: 443}}
  rules:
  - operations: [CREATE]
    apiGroups: [""]
    apiVersions: [v1]
    resources: [pods]
  namespaceSelector:
    matchExpressions:
    - {{key: istio-injection, operator: NotIn, values: [enabled, disabled]}}
    - {{key: kubernetes.io/metadata.name, operator: NotIn, values: [{ns}, kube-system]}}
"#,
        version = env!("CARGO_PKG_VERSION"),
        labels_pod =
            "app.kubernetes.io/name: weft\n        app.kubernetes.io/component: control-plane",
        webhook = WEBHOOK_NAME,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let mut i = Install::new("registry.example/weft:1");
        i.set("replicas", "3").unwrap();
        i.set("namespace", "mesh").unwrap();
        assert_eq!((i.replicas, i.namespace.as_str()), (3, "mesh"));
        assert!(i.set("replicas", "0").unwrap_err().contains("replicas"));
        assert!(i.set("imagePullPolicy", "Sometimes").is_err());
        assert!(i
            .set("colour", "blue")
            .unwrap_err()
            .contains("no setting `colour`"));
        let m = manifests(&i);
        assert!(m.contains("replicas: 3") && m.contains("namespace: mesh"));
        assert!(m.contains("image: registry.example/weft:1"));
    }

    #[test]
    fn every_access_is_in_the_rules_and_nothing_is_cluster_admin() {
        let m = manifests(&Install::new("weft:1"));
        for a in CLUSTER_ACCESS.iter().chain(NAMESPACE_ACCESS) {
            assert!(
                m.contains(&format!("resources: [{}]", a.resources.join(", "))),
                "{a:?}"
            );
        }
        assert!(
            !m.contains("\"*\"") && !m.contains("[*]"),
            "no wildcard in:\n{m}"
        );
    }
}
