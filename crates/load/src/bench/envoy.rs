//! Envoy configured for the same two-hop path weft runs: an app-facing HTTP/1.1 listener routing
//! to a STATIC cluster over HTTP/2 to the inbound Envoy, whose listener routes to the app over
//! HTTP/1.1. (Plaintext between the hops until weft's mTLS lands; then both sides switch.)

/// One Envoy's bootstrap: a listener on `listen` routing everything to `upstream`, speaking
/// HTTP/2 to it when `h2_upstream`.
pub fn config(listen: u16, upstream: u16, h2_upstream: bool, admin: u16) -> String {
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
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}{protocol}
"#
    )
}
