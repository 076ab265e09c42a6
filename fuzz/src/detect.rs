//! `detect`: what the proxy decides from a connection's or a request's first bytes without
//! trusting them.
//!
//! - [`proxy::tls::classify`], the PERMISSIVE port's TLS-or-plaintext decision, on every prefix
//!   of the input: it may ask for more bytes only while it has seen nothing or a lone
//!   handshake byte, and once it has decided, more bytes never change its answer (the proxy
//!   peeks at a growing prefix).
//! - The `x-weft-peer` metadata exchange ([`PeerMetadata::decode`], [`Peer::from_header`]):
//!   the value a peer (or anyone) sends, which decides the peer labels of the proxy's metrics.

use proxy::telemetry::peer::{Peer, PeerMetadata};
use proxy::tls::{classify, Sniffed};

pub fn run(data: &[u8]) {
    sniff(data);
    peer(data);
}

fn sniff(data: &[u8]) {
    let mut decided: Option<Sniffed> = None;
    for n in 0..=data.len().min(64) {
        let got = classify(&data[..n]);
        match (decided, got) {
            (None, None) => assert!(n <= 1, "undecided after {n} bytes: {:?}", &data[..n]),
            (None, Some(s)) => decided = Some(s),
            (Some(d), got) => assert_eq!(Some(d), got, "changed its mind at {n} bytes"),
        }
    }
    assert_ne!(
        decided,
        Some(Sniffed::Closed),
        "a prefix is never a closed connection"
    );
}

fn peer(data: &[u8]) {
    if let Some(meta) = PeerMetadata::decode(data) {
        // What was decoded encodes again to a value that decodes.
        let again = meta.encode();
        if again.len() <= proxy::telemetry::peer::MAX_HEADER_LEN {
            assert!(PeerMetadata::decode(again.as_bytes()).is_some());
        }
        let _ = meta.header_value();
    }
    let _ = Peer::from_header(Some(data), None);
    let _ = Peer::from_header(Some(data), Some("spiffe://cluster.local/ns/default/sa/web"));
}

#[cfg(test)]
mod tests {
    #[test]
    fn tls_http_and_nothing() {
        super::run(b"");
        super::run(b"\x16\x03\x01\x02\x00\x01");
        super::run(b"GET / HTTP/1.1\r\n\r\n");
        super::run(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    }
}
