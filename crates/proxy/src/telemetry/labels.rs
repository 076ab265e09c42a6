//! A series' Istio label set, rendered once when the series is created and written verbatim
//! at every scrape. Each histogram writes its label set on 11 to 22 lines, and writing 25
//! labels through prometheus-client's per-label encoder costs more than the whole rest of a
//! scrape; a series pays ~750 bytes to keep its rendering.

use super::peer::principal_label;
use super::series::Key;
use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use std::fmt::{self, Display, Write as _};

/// Istio's label names, in the order written. TCP series skip `response_code` and
/// `grpc_response_status`, as Istio's TCP metrics do.
pub(crate) const NAMES: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// `reporter="source",source_workload="…",…,connection_security_policy="unknown"`.
pub(crate) struct RenderedLabels {
    text: Box<str>,
    /// Where the last label's `="` starts.
    last: usize,
}

impl RenderedLabels {
    pub(crate) fn new(key: &Key, http: bool) -> Self {
        let Key {
            source: src,
            destination: dst,
            service: svc,
            closed,
        } = key;
        let principal = |p| {
            let (prefix, rest) = principal_label(p);
            Concat(prefix, rest)
        };
        let grpc = closed
            .grpc_status()
            .map_or(String::new(), |s| s.to_string());
        let values: [&dyn Display; 25] = [
            &closed.reporter(),
            &src.workload,
            &src.canonical_service,
            &src.canonical_revision,
            &src.namespace,
            &principal(&src.principal),
            &src.app,
            &src.version,
            &src.cluster,
            &dst.workload,
            &dst.namespace,
            &principal(&dst.principal),
            &dst.app,
            &dst.version,
            &svc.fqdn(),
            &dst.canonical_service,
            &dst.canonical_revision,
            &svc.name(),
            &svc.namespace(),
            &dst.cluster,
            &closed.protocol(),
            &closed.response_code(),
            &grpc,
            &closed.flags(),
            &closed.security_policy(),
        ];
        let mut text = String::with_capacity(800);
        let mut last = 0;
        for (name, value) in NAMES.iter().zip(values) {
            if !http && (*name == "response_code" || *name == "grpc_response_status") {
                continue;
            }
            if !text.is_empty() {
                text.push(',');
            }
            text.push_str(name);
            last = text.len();
            // Every value is a checked label value (no `"`, `\` or newline): no escaping.
            let _ = write!(text, "=\"{value}\"");
        }
        RenderedLabels {
            text: text.into(),
            last,
        }
    }
}

impl EncodeLabelSet for RenderedLabels {
    /// Written as one label whose "name" is every label but the last, rendered: the text
    /// encoder writes names verbatim, so the bytes are those of 25 separate labels. (The
    /// protobuf encoder would not be fooled; weft does not enable it.)
    fn encode(&self, mut e: LabelSetEncoder) -> fmt::Result {
        let (names, value) = self.text.split_at(self.last);
        let value = &value[2..value.len() - 1];
        (names, value).encode(e.encode_label())
    }
}

struct Concat<A, B>(A, B);

impl<A: Display, B: Display> Display for Concat<A, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)?;
        self.1.fmt(f)
    }
}
