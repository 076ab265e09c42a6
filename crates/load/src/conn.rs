//! Connections: one keep-alive HTTP/1.1 connection per lane (driven directly, see [`crate::h1`]),
//! or h2c (HTTP/2 with prior knowledge) connections on hyper's client, shared by several lanes
//! as streams.
//!
//! Each connection's driver runs in its own task, aborted when the last sender using it goes away,
//! so a connection abandoned after a timeout never outlives the run.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::h1::H1Conn;
use crate::plan::{Plan, Template};

type Body = Full<Bytes>;

/// Opening a connection failed (refused, unreachable, handshake error) or took longer than allowed.
#[derive(Debug)]
pub(crate) struct ConnectFailed;

/// Why an exchange produced no answer.
#[derive(Debug, PartialEq)]
pub(crate) enum ExchangeFailed {
    /// The connection turned out closed before the request was handed to it (the server closed an
    /// idle keep-alive connection, or answered the previous request with `Connection: close`).
    NotSent,
    /// The request or its response failed on the wire (reset, closed, protocol error).
    Io,
}

impl From<hyper::Error> for ExchangeFailed {
    fn from(_: hyper::Error) -> ExchangeFailed {
        ExchangeFailed::Io
    }
}

/// Aborts a connection's driver task when dropped.
#[derive(Debug)]
pub(crate) struct Driver(AbortHandle);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn tcp(plan: &Plan) -> Result<TokioIo<TcpStream>, ConnectFailed> {
    let stream = TcpStream::connect(&plan.addrs[..])
        .await
        .map_err(|_| ConnectFailed)?;
    stream.set_nodelay(true).map_err(|_| ConnectFailed)?;
    Ok(TokioIo::new(stream))
}

async fn connect_h1(plan: &Plan) -> Result<H1Conn, ConnectFailed> {
    Ok(H1Conn::new(tcp(plan).await?.into_inner()))
}

async fn connect_h2(plan: &Plan) -> Result<(http2::SendRequest<Body>, Driver), ConnectFailed> {
    let io = tcp(plan).await?;
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .handshake(io)
        .await
        .map_err(|_| ConnectFailed)?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((sender, Driver(task.abort_handle())))
}

/// The h2c connections lanes share: lane `i` uses connection `i % connections`.
#[derive(Debug)]
pub(crate) struct H2Pool {
    slots: Vec<tokio::sync::Mutex<H2Slot>>,
}

#[derive(Debug, Default)]
struct H2Slot {
    /// Bumped on every reconnect so a lane can tell whether someone else already replaced the
    /// connection it saw fail.
    generation: u64,
    conn: Option<H2Conn>,
}

#[derive(Debug, Clone)]
pub(crate) struct H2Conn {
    sender: http2::SendRequest<Body>,
    _driver: Arc<Driver>,
}

impl H2Pool {
    pub fn new(plan: &Plan) -> Option<Arc<H2Pool>> {
        plan.http2.then(|| {
            Arc::new(H2Pool {
                slots: (0..plan.connections)
                    .map(|_| tokio::sync::Mutex::new(H2Slot::default()))
                    .collect(),
            })
        })
    }

    /// A live connection for slot `slot`: the current one unless it is the failed `seen`
    /// generation (or missing), in which case this lane reconnects it for everyone.
    async fn get(
        &self,
        plan: &Plan,
        slot: usize,
        seen: Option<u64>,
    ) -> Result<(u64, H2Conn), ConnectFailed> {
        let mut s = self.slots[slot % self.slots.len()].lock().await;
        if let Some(c) = &s.conn {
            if Some(s.generation) != seen && !c.sender.is_closed() {
                return Ok((s.generation, c.clone()));
            }
        }
        s.conn = None;
        let (sender, driver) = connect_h2(plan).await?;
        s.generation += 1;
        let c = H2Conn {
            sender,
            _driver: Arc::new(driver),
        };
        s.conn = Some(c.clone());
        Ok((s.generation, c))
    }
}

/// One lane's way to the target.
#[derive(Debug)]
pub(crate) enum LaneConn {
    H1 {
        conn: Option<H1Conn>,
    },
    H2 {
        pool: Arc<H2Pool>,
        slot: usize,
        conn: Option<(u64, H2Conn)>,
        /// The generation that last failed on this lane, so it is not reused.
        failed: Option<u64>,
    },
}

impl LaneConn {
    pub fn new(pool: Option<Arc<H2Pool>>, lane: usize) -> LaneConn {
        match pool {
            Some(pool) => LaneConn::H2 {
                pool,
                slot: lane,
                conn: None,
                failed: None,
            },
            None => LaneConn::H1 { conn: None },
        }
    }

    /// Connects ahead of the run; a failure here is left for the first request to find and count.
    pub async fn warm(mut self, plan: &Plan) -> LaneConn {
        let deadline = Instant::now() + plan.timeout;
        let _ = self.ensure(plan, deadline).await;
        self
    }

    /// Makes sure there is a usable connection, connecting if needed (bounded by `deadline`).
    pub async fn ensure(&mut self, plan: &Plan, deadline: Instant) -> Result<(), ConnectFailed> {
        match self {
            LaneConn::H1 { conn } => {
                if conn.as_ref().is_some_and(|c| !c.is_closed()) {
                    return Ok(());
                }
                *conn = None;
                let fresh = tokio::time::timeout_at(deadline, connect_h1(plan))
                    .await
                    .map_err(|_| ConnectFailed)??;
                *conn = Some(fresh);
                Ok(())
            }
            LaneConn::H2 {
                pool,
                slot,
                conn,
                failed,
            } => {
                if conn.as_ref().is_some_and(|(_, c)| !c.sender.is_closed()) {
                    return Ok(());
                }
                if let Some((generation, _)) = conn.take() {
                    *failed = Some(generation);
                }
                let fresh = tokio::time::timeout_at(deadline, pool.get(plan, *slot, *failed))
                    .await
                    .map_err(|_| ConnectFailed)??;
                *conn = Some(fresh);
                Ok(())
            }
        }
    }

    /// Sends the template's request on the connection [`LaneConn::ensure`] made ready and
    /// reads the whole answer; also says when the request was handed to the connection.
    pub async fn exchange(
        &mut self,
        t: &Template,
    ) -> Result<(StatusCode, Instant), ExchangeFailed> {
        let sent = Instant::now();
        let resp = match self {
            LaneConn::H1 { conn: Some(c) } => {
                let head = t.method() == http::Method::HEAD;
                return Ok((c.exchange(t.wire(), head).await?, sent));
            }
            LaneConn::H2 {
                conn: Some((_, c)), ..
            } => c.sender.send_request(t.request()).await?,
            // Not reached: callers `ensure` a connection first.
            LaneConn::H1 { conn: None } | LaneConn::H2 { conn: None, .. } => {
                return Err(ExchangeFailed::NotSent)
            }
        };
        let status = resp.status();
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            frame?;
        }
        Ok((status, sent))
    }

    /// After a failed exchange: an HTTP/1.1 connection is in an unknown state and is dropped; an
    /// HTTP/2 connection survives a failed stream unless the connection itself is closed.
    pub fn failed(&mut self) {
        match self {
            LaneConn::H1 { conn } => *conn = None,
            LaneConn::H2 { conn, failed, .. } => {
                if let Some((generation, c)) = conn {
                    if c.sender.is_closed() {
                        *failed = Some(*generation);
                        *conn = None;
                    }
                }
            }
        }
    }
}
