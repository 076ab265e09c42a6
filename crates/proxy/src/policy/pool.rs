//! Istio's `connectionPool` as Envoy applies it to an HTTP/1.1 upstream: a backend has at most
//! `maxConnections` connections, each carrying one request at a time and closed after
//! `maxRequestsPerConnection` requests; a request that finds no idle connection waits — as one
//! of at most `http1MaxPendingRequests` pending requests — until a connection is free or a new
//! one is open; at most `http2MaxRequests` requests are on connections at once. A request past
//! the pending or the request limit is refused at once (503 `UO`).
//!
//! Only backends whose policy sets one of these limits have a [`ConnPool`]; the others send
//! over the endpoint's shared HTTP/2 connection and never come here. The accounting is atomics
//! and a fair semaphore (one permit per connection that may be busy), generic over the
//! connection type so that it is tested without sockets.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Idle connections a backend keeps at most when `maxConnections` is not set.
const MAX_IDLE: usize = 1024;

/// The limits of a backend's connection pool (`None`: not limited).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolLimits {
    /// `tcp.maxConnections`.
    pub max_connections: Option<u32>,
    /// `http.http1MaxPendingRequests`.
    pub max_pending: Option<u32>,
    /// `http.http2MaxRequests`.
    pub max_requests: Option<u32>,
    /// `http.maxRequestsPerConnection`.
    pub max_requests_per_connection: Option<u32>,
}

impl PoolLimits {
    /// The pool a `connectionPool` asks for, if it limits connections at all.
    pub fn of(pool: &model::ConnectionPool) -> Option<PoolLimits> {
        pool.limits_connections().then(|| PoolLimits {
            // Istio treats 0 as "not set"; config has already turned it into `None`.
            max_connections: pool.max_connections.map(|n| n.max(1)),
            max_pending: pool.max_pending_requests,
            max_requests: pool.max_requests,
            max_requests_per_connection: pool.max_requests_per_connection.filter(|n| *n > 0),
        })
    }
}

/// A pooled connection, as the pool needs to know it.
pub trait Pooled {
    /// Still open: it may carry another request.
    fn is_open(&self) -> bool;
}

/// Why a request got no connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused<E> {
    /// Pending requests (`http1MaxPendingRequests`) or requests on connections
    /// (`http2MaxRequests`) at their limit: 503 `UO`.
    Overflow(&'static str),
    /// Opening a connection failed.
    Connect(E),
}

/// One backend's connections.
pub struct ConnPool<C> {
    limits: PoolLimits,
    /// One permit per connection that may be busy: `maxConnections` of them.
    capacity: Arc<Semaphore>,
    /// Open connections no request is using, newest last.
    idle: crossbeam_queue::ArrayQueue<Idle<C>>,
    pending: AtomicU32,
    active: AtomicU32,
    /// Connections opened, for tests and `weft`'s view of the pool.
    opened: AtomicU32,
}

struct Idle<C> {
    conn: C,
    /// Requests it has carried.
    served: u32,
}

impl<C: Pooled> ConnPool<C> {
    pub fn new(limits: PoolLimits) -> Arc<ConnPool<C>> {
        let max = limits
            .max_connections
            .map_or(Semaphore::MAX_PERMITS, |n| n as usize);
        Arc::new(ConnPool {
            capacity: Arc::new(Semaphore::new(max)),
            idle: crossbeam_queue::ArrayQueue::new(max.clamp(1, MAX_IDLE)),
            pending: AtomicU32::new(0),
            active: AtomicU32::new(0),
            opened: AtomicU32::new(0),
            limits,
        })
    }

    pub fn limits(&self) -> &PoolLimits {
        &self.limits
    }

    /// Requests waiting for a connection now.
    pub fn pending(&self) -> u32 {
        self.pending.load(Relaxed)
    }

    /// Requests on connections now.
    pub fn active(&self) -> u32 {
        self.active.load(Relaxed)
    }

    /// Connections opened so far.
    pub fn opened(&self) -> u32 {
        self.opened.load(Relaxed)
    }

    /// A connection for one request: an idle one that `fits` (same endpoint) at once, or —
    /// counted as pending meanwhile — the next one free, or a new one from `connect` when the
    /// pool may have one more. Idle connections that do not fit are closed to make room.
    pub async fn lease<E, F, Fut>(
        self: &Arc<Self>,
        fits: impl Fn(&C) -> bool,
        connect: F,
    ) -> Result<Lease<C>, Refused<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<C, E>>,
    {
        // A free slot with an idle connection that fits: no wait at all (Envoy's ready client).
        let mut early = self.capacity.clone().try_acquire_owned().ok();
        if let Some(permit) = early.take() {
            match self.take_idle(&fits) {
                Some(idle) => return self.attach(idle.conn, idle.served, permit),
                None => early = Some(permit),
            }
        }
        // Otherwise the request is pending until a connection is ready for it.
        let _pending = self.enter_pending().map_err(Refused::Overflow)?;
        let permit = match early {
            Some(p) => p,
            None => self
                .capacity
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Refused::Overflow("connection pool closed"))?,
        };
        if let Some(idle) = self.take_idle(&fits) {
            return self.attach(idle.conn, idle.served, permit);
        }
        let conn = connect().await.map_err(Refused::Connect)?;
        self.opened.fetch_add(1, Relaxed);
        self.attach(conn, 0, permit)
    }

    /// Counts the request as pending, unless the pending limit is reached.
    fn enter_pending(&self) -> Result<PendingGuard<'_>, &'static str> {
        let n = self.pending.fetch_add(1, Relaxed);
        let guard = PendingGuard(&self.pending);
        if self.limits.max_pending.is_some_and(|max| n >= max) {
            return Err("http1MaxPendingRequests");
        }
        Ok(guard)
    }

    fn take_idle(&self, fits: &impl Fn(&C) -> bool) -> Option<Idle<C>> {
        while let Some(idle) = self.idle.pop() {
            if idle.conn.is_open() && fits(&idle.conn) {
                return Some(idle);
            }
            // Closed, or to another endpoint: dropped, its room goes to the new connection.
        }
        None
    }

    /// Puts the request on `conn`, within `http2MaxRequests`.
    fn attach<E>(
        self: &Arc<Self>,
        conn: C,
        served: u32,
        permit: OwnedSemaphorePermit,
    ) -> Result<Lease<C>, Refused<E>> {
        let n = self.active.fetch_add(1, Relaxed);
        let lease = Lease {
            pool: self.clone(),
            conn: Some(conn),
            served: served + 1,
            permit: Some(permit),
        };
        if self.limits.max_requests.is_some_and(|max| n >= max) {
            // The connection stays: it goes back idle as the lease drops.
            drop(lease.unserved());
            return Err(Refused::Overflow("http2MaxRequests"));
        }
        Ok(lease)
    }
}

/// A request counted as pending until dropped.
struct PendingGuard<'a>(&'a AtomicU32);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// A connection held by one request; given back (or retired, after
/// `maxRequestsPerConnection` requests or once closed) when dropped.
pub struct Lease<C: Pooled> {
    pool: Arc<ConnPool<C>>,
    conn: Option<C>,
    /// Requests the connection has carried, this one included.
    served: u32,
    permit: Option<OwnedSemaphorePermit>,
}

impl<C: Pooled> Lease<C> {
    pub fn conn(&self) -> &C {
        self.conn
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }

    /// The connection failed: it is closed rather than given back.
    pub fn retire(&mut self) {
        self.conn = None;
    }

    /// The request never went out on it: it does not count toward the connection's requests.
    fn unserved(mut self) -> Self {
        self.served -= 1;
        self
    }
}

impl<C: Pooled> Drop for Lease<C> {
    fn drop(&mut self) {
        self.pool.active.fetch_sub(1, Relaxed);
        if let Some(conn) = self.conn.take() {
            let spent = self
                .pool
                .limits
                .max_requests_per_connection
                .is_some_and(|max| self.served >= max);
            if !spent && conn.is_open() {
                // Back before the slot is: whoever takes the slot next finds it.
                let _ = self.pool.idle.push(Idle {
                    conn,
                    served: self.served,
                });
            }
        }
        // The slot is free again: the first pending request takes it.
        self.permit = None;
    }
}
