//! Who is at the other end of a request: Istio's peer metadata (workload, namespace, app,
//! version, canonical service and revision, principal, cluster), exchanged between proxies in
//! the `x-weft-peer` header, and the destination service's labels.
//!
//! Wire format of `x-weft-peer`: base64url without padding (RFC 4648 §5) of a compact JSON
//! object with the string fields `workload`, `namespace`, `app`, `version`,
//! `canonical_service`, `canonical_revision`, `principal`, `cluster`. Missing fields read as
//! `unknown`, unknown fields are ignored (so either side may add fields later). The client's
//! proxy sends its own metadata on each request, the server's proxy on each response, as
//! Istio's metadata exchange does with `x-envoy-peer-metadata`. HPACK makes the repeated value
//! almost free between proxies; it never reaches the app (the proxies remove it).

use super::hash;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::HeaderValue;
use model::{Identity, Labels, ServiceKey};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, LazyLock};

/// The header carrying a proxy's [`PeerMetadata`]: on requests (client → server) and on
/// responses (server → client).
pub const PEER_HEADER: &str = "x-weft-peer";
/// [`PEER_HEADER`] as a [`http::HeaderName`] made at compile time (inserting by `&str` copies
/// the name on every request).
pub const PEER: http::HeaderName = http::HeaderName::from_static(PEER_HEADER);
/// Istio's value for every label it cannot fill.
pub const UNKNOWN: &str = "unknown";
/// Istio's cluster name when nothing sets `CLUSTER_ID`.
pub const DEFAULT_CLUSTER: &str = "Kubernetes";
/// Istio's canonical revision when no label names one.
pub const DEFAULT_REVISION: &str = "latest";
/// Longest `x-weft-peer` value decoded. A real one is ~300 bytes; eight fields at
/// [`MAX_VALUE_LEN`] would need ~5.5 KiB, which no workload has, so longer means hostile.
pub const MAX_HEADER_LEN: usize = 4096;
/// Longest label value kept: a principal is `TRUST_DOMAIN/ns/NS/sa/SA` with a 63-character
/// namespace and a 253-character service account, well under this.
pub const MAX_VALUE_LEN: usize = 512;
/// The label value of series folded together by the cardinality guard.
pub(crate) const OVERFLOW: &str = "overflow";

const SPIFFE: &str = "spiffe://";

/// What a proxy tells its peer about the workload it fronts (Istio's metadata exchange).
/// Every field is a label value: printable ASCII without `"` or `\`, at most
/// [`MAX_VALUE_LEN`] bytes, or `unknown`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerMetadata {
    pub workload: String,
    pub namespace: String,
    pub app: String,
    pub version: String,
    pub canonical_service: String,
    pub canonical_revision: String,
    /// The SPIFFE ID without `spiffe://` (`cluster.local/ns/default/sa/hello`), the form
    /// AuthorizationPolicy `principals` use. The metric labels carry the full URI, as Istio's.
    pub principal: String,
    pub cluster: String,
}

impl Default for PeerMetadata {
    fn default() -> Self {
        Self::unknown()
    }
}

impl PeerMetadata {
    /// Nothing known: every field `unknown`, as Istio reports a peer without metadata.
    pub fn unknown() -> Self {
        let u = || UNKNOWN.to_owned();
        PeerMetadata {
            workload: u(),
            namespace: u(),
            app: u(),
            version: u(),
            canonical_service: u(),
            canonical_revision: u(),
            principal: u(),
            cluster: u(),
        }
    }

    /// A workload's metadata from its name, namespace, labels and identity, with Istio's
    /// fallbacks: app from `app` or `app.kubernetes.io/name`; version from `version` or
    /// `app.kubernetes.io/version`; canonical service from `service.istio.io/canonical-name`,
    /// else the app, else the workload; canonical revision from
    /// `service.istio.io/canonical-revision`, else the version, else `latest`; cluster
    /// `Kubernetes` (change it with [`PeerMetadata::with_cluster`]).
    pub fn from_labels(
        workload: &str,
        namespace: &str,
        labels: &Labels,
        identity: Option<&Identity>,
    ) -> Self {
        let label = |keys: &[&str]| {
            keys.iter()
                .filter_map(|k| labels.get(*k))
                .find(|v| valid(v))
                .cloned()
        };
        let workload = clean(workload);
        let app = label(&["app", "app.kubernetes.io/name"]);
        let version = label(&["version", "app.kubernetes.io/version"]);
        let canonical_service = label(&["service.istio.io/canonical-name"])
            .or_else(|| app.clone())
            .unwrap_or_else(|| workload.clone());
        let canonical_revision = label(&["service.istio.io/canonical-revision"])
            .or_else(|| version.clone())
            .unwrap_or_else(|| DEFAULT_REVISION.to_owned());
        PeerMetadata {
            namespace: clean(namespace),
            app: app.unwrap_or_else(|| UNKNOWN.to_owned()),
            version: version.unwrap_or_else(|| UNKNOWN.to_owned()),
            canonical_service,
            canonical_revision,
            principal: identity.map_or_else(|| UNKNOWN.to_owned(), |id| principal(&id.0)),
            cluster: DEFAULT_CLUSTER.to_owned(),
            workload,
        }
    }

    pub fn with_cluster(mut self, cluster: &str) -> Self {
        self.cluster = clean(cluster);
        self
    }

    /// The `x-weft-peer` value (see the module doc for the format). Build it once at start.
    pub fn encode(&self) -> String {
        // Serializing a struct of strings cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// [`PeerMetadata::encode`] as a header value (base64url is always a valid one).
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.encode()).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// What a peer claims in its `x-weft-peer` value. `None` for anything that is not a
    /// well-formed value of at most [`MAX_HEADER_LEN`] bytes; a field that is missing or not a
    /// valid label value reads `unknown`. Never panics, allocates at most a few KiB.
    pub fn decode(value: &[u8]) -> Option<Self> {
        if value.is_empty() || value.len() > MAX_HEADER_LEN {
            return None;
        }
        let json = URL_SAFE_NO_PAD.decode(value).ok()?;
        // Recursion is bounded by serde_json (128 levels); unknown keys are skipped.
        let mut meta: PeerMetadata = serde_json::from_slice(&json).ok()?;
        meta.sanitize();
        Some(meta)
    }

    fn sanitize(&mut self) {
        for field in [
            &mut self.workload,
            &mut self.namespace,
            &mut self.app,
            &mut self.version,
            &mut self.canonical_service,
            &mut self.canonical_revision,
            &mut self.principal,
            &mut self.cluster,
        ] {
            if !valid(field) {
                *field = UNKNOWN.to_owned();
            }
        }
        if let Some(p) = self.principal.strip_prefix(SPIFFE) {
            self.principal = clean(p);
        }
    }
}

/// A shared, pre-hashed [`PeerMetadata`]: what a metric key holds. Cloning is an `Arc` clone;
/// comparing is a pointer compare, then the hash, then the fields.
#[derive(Clone)]
pub struct Peer(Arc<PeerInner>);

struct PeerInner {
    meta: PeerMetadata,
    hash: u64,
}

static UNKNOWN_PEER: LazyLock<Peer> = LazyLock::new(|| Peer::new(PeerMetadata::unknown()));
static OVERFLOW_PEER: LazyLock<Peer> = LazyLock::new(|| {
    Peer::new(PeerMetadata {
        workload: OVERFLOW.into(),
        namespace: OVERFLOW.into(),
        app: OVERFLOW.into(),
        version: OVERFLOW.into(),
        canonical_service: OVERFLOW.into(),
        canonical_revision: OVERFLOW.into(),
        principal: OVERFLOW.into(),
        cluster: OVERFLOW.into(),
    })
});

impl Peer {
    /// Sanitizes every field (see [`PeerMetadata`]) and hashes them once.
    pub fn new(mut meta: PeerMetadata) -> Self {
        meta.sanitize();
        let hash = hash::one(&meta);
        Peer(Arc::new(PeerInner { meta, hash }))
    }

    /// The peer of a request that carried no metadata.
    pub fn unknown() -> Self {
        UNKNOWN_PEER.clone()
    }

    /// The peer a request's `x-weft-peer` value names (`None`: no header), with the principal
    /// taken from the mTLS handshake and never from the header: `verified_principal` is the
    /// peer certificate's SPIFFE ID (with or without `spiffe://`), `None` on plaintext, which
    /// Istio reports as `unknown`. Uncached; [`super::Telemetry::peer_from_header`] caches.
    pub fn from_header(value: Option<&[u8]>, verified_principal: Option<&str>) -> Self {
        let meta = value.and_then(PeerMetadata::decode);
        if meta.is_none() && verified_principal.is_none() {
            return Peer::unknown();
        }
        let mut meta = meta.unwrap_or_else(PeerMetadata::unknown);
        meta.principal = verified_principal.map_or_else(|| UNKNOWN.to_owned(), principal);
        Peer::new(meta)
    }

    pub(crate) fn overflow() -> &'static Peer {
        &OVERFLOW_PEER
    }

    pub fn metadata(&self) -> &PeerMetadata {
        &self.0.meta
    }

    pub(crate) fn hash64(&self) -> u64 {
        self.0.hash
    }

    /// Whether both are the same shared value (not merely equal).
    pub fn ptr_eq(&self, other: &Peer) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Deref for Peer {
    type Target = PeerMetadata;
    fn deref(&self) -> &PeerMetadata {
        &self.0.meta
    }
}

impl PartialEq for Peer {
    fn eq(&self, other: &Peer) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.hash == other.0.hash && self.0.meta == other.0.meta)
    }
}

impl Eq for Peer {}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.meta.fmt(f)
    }
}

/// The destination service's labels: `destination_service` (the FQDN),
/// `destination_service_name` and `destination_service_namespace`. Build one per service when
/// the snapshot changes, not per request.
#[derive(Clone)]
pub struct DestinationService(Arc<ServiceInner>);

struct ServiceInner {
    /// `(fqdn, name, namespace)`
    labels: (String, String, String),
    hash: u64,
}

static UNKNOWN_SERVICE: LazyLock<DestinationService> =
    LazyLock::new(|| DestinationService::from_parts(UNKNOWN, UNKNOWN, UNKNOWN));
static OVERFLOW_SERVICE: LazyLock<DestinationService> =
    LazyLock::new(|| DestinationService::from_parts(OVERFLOW, OVERFLOW, OVERFLOW));

impl DestinationService {
    /// `NAME.NAMESPACE.svc.cluster.local`, `NAME`, `NAMESPACE`.
    pub fn new(key: &ServiceKey) -> Self {
        Self::from_parts(&key.fqdn(), &key.name, &key.namespace)
    }

    /// Any three values (for example the `Host` of a request that matched no service); each is
    /// sanitized like a [`PeerMetadata`] field.
    pub fn from_parts(fqdn: &str, name: &str, namespace: &str) -> Self {
        let labels = (clean(fqdn), clean(name), clean(namespace));
        let hash = hash::one(&labels);
        DestinationService(Arc::new(ServiceInner { labels, hash }))
    }

    /// A request that matched no service.
    pub fn unknown() -> Self {
        UNKNOWN_SERVICE.clone()
    }

    pub(crate) fn overflow() -> &'static DestinationService {
        &OVERFLOW_SERVICE
    }

    pub fn fqdn(&self) -> &str {
        &self.0.labels.0
    }

    pub fn name(&self) -> &str {
        &self.0.labels.1
    }

    pub fn namespace(&self) -> &str {
        &self.0.labels.2
    }

    pub(crate) fn hash64(&self) -> u64 {
        self.0.hash
    }
}

impl PartialEq for DestinationService {
    fn eq(&self, other: &DestinationService) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.hash == other.0.hash && self.0.labels == other.0.labels)
    }
}

impl Eq for DestinationService {}

impl fmt::Debug for DestinationService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DestinationService")
            .field("fqdn", &self.fqdn())
            .field("name", &self.name())
            .field("namespace", &self.namespace())
            .finish()
    }
}

/// A principal as [`PeerMetadata`] keeps it: without `spiffe://`.
pub(crate) fn principal(id: &str) -> String {
    clean(id.strip_prefix(SPIFFE).unwrap_or(id))
}

/// How a principal reads in a metric label: the full SPIFFE URI, as Istio reports it
/// (`spiffe://cluster.local/ns/default/sa/hello`), or `unknown` / `overflow`.
pub(crate) fn principal_label(p: &str) -> (&'static str, &str) {
    if p == UNKNOWN || p == OVERFLOW {
        ("", p)
    } else {
        (SPIFFE, p)
    }
}

/// Whether `s` can be a label value as is. prometheus-client writes label values unescaped,
/// so a `"`, `\` or newline from a peer would corrupt the exposition; anything outside
/// printable ASCII is refused rather than escaped.
pub(crate) fn valid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_VALUE_LEN
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// `s` if it is a valid label value, else `unknown`.
pub(crate) fn clean(s: &str) -> String {
    if valid(s) {
        s.to_owned()
    } else {
        UNKNOWN.to_owned()
    }
}
