//! Connection caps, in the spirit of Envoy's overload manager: each listener and the proxy as
//! a whole count their open connections; past a cap a new connection is answered 503 (flag
//! `OM`) and closed at once, while established connections keep being served. The admin
//! listener has its own small cap outside the proxy's, so readiness and metrics stay
//! answerable under any load.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Open connections against a cap.
#[derive(Debug)]
pub struct ConnCap {
    open: AtomicUsize,
    max: usize,
    refused: AtomicU64,
}

impl ConnCap {
    pub fn new(max: usize) -> Arc<ConnCap> {
        Arc::new(ConnCap {
            open: AtomicUsize::new(0),
            max,
            refused: AtomicU64::new(0),
        })
    }

    /// A slot, if one is free.
    pub fn try_take(self: &Arc<Self>) -> Option<ConnPermit> {
        let mut open = self.open.load(Ordering::Relaxed);
        loop {
            if open >= self.max {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(ConnPermit(self.clone())),
                Err(now) => open = now,
            }
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections refused at the cap so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// One open connection's slot; given back when dropped.
#[derive(Debug)]
pub struct ConnPermit(Arc<ConnCap>);

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a connection refused at the cap gets, when its socket takes it at once (a plaintext
/// listener); otherwise it is just closed.
pub const SHED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nx-weft-flag: OM\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 44\r\nconnection: close\r\n\r\nthe proxy is at its connection limit; retry\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_counts_and_refuses() {
        let cap = ConnCap::new(2);
        let a = cap.try_take().unwrap();
        let _b = cap.try_take().unwrap();
        assert!(cap.try_take().is_none());
        assert_eq!((cap.open(), cap.refused()), (2, 1));
        drop(a);
        assert!(cap.try_take().is_some());
    }

    #[test]
    fn the_shed_response_is_well_formed() {
        let text = std::str::from_utf8(SHED_RESPONSE).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body.len(), 44);
    }
}
