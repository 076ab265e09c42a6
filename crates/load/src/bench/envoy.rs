//! Envoy configured for the same two-hop paths weft runs. HTTP ([`config`]): an app-facing
//! HTTP/1.1 listener routing to a STATIC cluster over HTTP/2 to the inbound Envoy, whose listener
//! routes to the app over HTTP/1.1. TCP ([`tcp_config`]): a plain listener whose `tcp_proxy`
//! sends each connection to the inbound Envoy, whose TLS-terminating listener's `tcp_proxy`
//! sends it on to the app. Between the two Envoys: mTLS (TLS 1.3, the peer's SPIFFE URI SAN
//! checked; ALPN h2 on the HTTP path), as weft's proxies do, unless the benchmark runs plaintext.

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
    h2: bool,
    indent: &str,
) -> String {
    // The TCP path carries raw bytes: no application protocol to negotiate.
    let alpn = if h2 {
        format!("\n{indent}  alpn_protocols: [h2]")
    } else {
        String::new()
    };
    format!(
        r#"common_tls_context:
{indent}  tls_params: {{tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3}}{alpn}
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

/// The transport sockets of one Envoy's side of the mTLS hop: (on its listener's filter chain,
/// on its upstream cluster); empty strings for plaintext. `h2`: offer ALPN h2.
fn transport_sockets(tls: Option<Tls<'_>>, h2: bool) -> (String, String) {
    match tls {
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
                    h2,
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
                tls_context(
                    &c.client_cert,
                    &c.client_key,
                    &c.ca,
                    SERVER_ID,
                    h2,
                    "        "
                )
            ),
        ),
    }
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
    let (downstream_tls, upstream_tls) = transport_sockets(tls, true);
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

/// One Envoy's bootstrap for the TCP path: a listener on `listen` whose `tcp_proxy` sends every
/// connection to `upstream`, with mTLS on the proxy-to-proxy hop when `tls` says so (the
/// inbound Envoy terminates it on its listener, the outbound one originates it on its cluster).
pub fn tcp_config(listen: u16, upstream: u16, admin: u16, tls: Option<Tls<'_>>) -> String {
    let (downstream_tls, upstream_tls) = transport_sockets(tls, false);
    format!(
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: listener
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: bench_tcp
          cluster: upstream{downstream_tls}
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}{upstream_tls}
"#
    )
}
