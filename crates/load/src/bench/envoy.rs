//! Envoy configured for the same two-hop path weft runs: an app-facing HTTP/1.1 listener routing
//! to a STATIC cluster over HTTP/2 to the inbound Envoy, whose listener routes to the app over
//! HTTP/1.1. Between the two Envoys: mTLS (TLS 1.3, ALPN h2, the peer's SPIFFE URI SAN checked),
//! as weft's proxies do, unless the benchmark runs plaintext.

use super::tls::{EnvoyCerts, CLIENT_ID, SERVER_ID};

/// Which side of the mTLS hop an Envoy is.
pub enum Tls<'a> {
    /// The app-facing Envoy: presents the client certificate upstream, checks the server's SAN.
    Client(&'a EnvoyCerts),
    /// The app's Envoy: requires a client certificate with the client's SAN.
    Server(&'a EnvoyCerts),
}

fn tls_context(
    cert: &std::path::Path,
    key: &std::path::Path,
    ca: &std::path::Path,
    peer: &str,
    indent: &str,
) -> String {
    format!(
        r#"common_tls_context:
{indent}  tls_params: {{tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3}}
{indent}  alpn_protocols: [h2]
{indent}  tls_certificates:
{indent}  - certificate_chain: {{filename: "{}"}}
{indent}    private_key: {{filename: "{}"}}
{indent}  validation_context:
{indent}    trusted_ca: {{filename: "{}"}}
{indent}    match_typed_subject_alt_names:
{indent}    - san_type: URI
{indent}      matcher: {{exact: "{peer}"}}"#,
        cert.display(),
        key.display(),
        ca.display()
    )
}

/// One Envoy's bootstrap: a listener on `listen` routing everything to `upstream`, speaking
/// HTTP/2 to it when `h2_upstream`, with mTLS on the proxy-to-proxy hop when `tls` says so.
pub fn config(
    listen: u16,
    upstream: u16,
    h2_upstream: bool,
    admin: u16,
    tls: Option<Tls<'_>>,
) -> String {
    let (downstream_tls, upstream_tls) = match tls {
        None => (String::new(), String::new()),
        Some(Tls::Server(c)) => (
            format!(
                r#"
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          {}"#,
                tls_context(
                    &c.server_cert,
                    &c.server_key,
                    &c.ca,
                    CLIENT_ID,
                    "          "
                )
            ),
            String::new(),
        ),
        Some(Tls::Client(c)) => (
            String::new(),
            format!(
                r#"
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        {}"#,
                tls_context(&c.client_cert, &c.client_key, &c.ca, SERVER_ID, "        ")
            ),
        ),
    };
    let protocol = if h2_upstream {
        r#"
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}"#
    } else {
        ""
    };
    format!(
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: listener
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: upstream, timeout: 0s}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router{downstream_tls}
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}{protocol}{upstream_tls}
"#
    )
}
