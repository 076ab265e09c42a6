//! The I/O of one accepted connection, watched: when it last moved a byte (for the idle
//! timeout), and, on HTTP/2, the frames the client sends, so that floods of frames that cost
//! the proxy work but carry no request — SETTINGS, PING, empty DATA/HEADERS/CONTINUATION,
//! WINDOW_UPDATE, PRIORITY — end in GOAWAY(ENHANCE_YOUR_CALM) and a closed connection (Envoy's
//! flood defences, by their counters). The bytes pass through untouched otherwise; only the
//! 9-byte frame headers are read.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Non-ACK SETTINGS frames a client may send per second.
pub const MAX_SETTINGS_PER_SECOND: u32 = 100;
/// Non-ACK PING frames a client may send per second.
pub const MAX_PINGS_PER_SECOND: u32 = 1000;
/// Frames in a row with an empty payload (Envoy's
/// `max_consecutive_inbound_frames_with_empty_payload` is 1; a little slack for odd clients).
pub const MAX_CONSECUTIVE_EMPTY: u32 = 10;
/// PRIORITY frames per stream the client opened (Envoy's
/// `max_inbound_priority_frames_per_stream`).
pub const MAX_PRIORITY_PER_STREAM: u64 = 100;
/// WINDOW_UPDATE frames per DATA frame the proxy sent (Envoy's
/// `max_inbound_window_update_frames_per_data_frame_sent`), with this many free.
pub const MAX_WINDOW_UPDATES_PER_DATA: u64 = 10;
pub const FREE_WINDOW_UPDATES: u64 = 100;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Milliseconds since the process's first use of this clock.
fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// What the connection's task can see of its I/O.
#[derive(Default)]
pub struct Activity {
    last: AtomicU64,
    flooded: AtomicBool,
    flood: tokio::sync::Notify,
}

impl Activity {
    /// How long the connection has not moved a byte.
    pub fn idle_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.last.load(Ordering::Relaxed)))
    }

    /// The client flooded the connection; it is being closed.
    pub fn flooded(&self) -> bool {
        self.flooded.load(Ordering::Relaxed)
    }

    /// Resolves once the client has flooded the connection.
    pub async fn flood_seen(&self) {
        self.flood.notified().await
    }

    fn touch(&self) {
        self.last.store(now_ms(), Ordering::Relaxed);
    }
}

/// Which flood a connection was closed for (the counter label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flood {
    Settings,
    Ping,
    EmptyFrames,
    WindowUpdate,
    Priority,
}

impl Flood {
    pub fn as_str(self) -> &'static str {
        match self {
            Flood::Settings => "settings",
            Flood::Ping => "ping",
            Flood::EmptyFrames => "empty_frames",
            Flood::WindowUpdate => "window_update",
            Flood::Priority => "priority",
        }
    }
}

/// Floods seen, by kind, across the proxy's listeners.
#[derive(Default)]
pub struct Floods([AtomicU64; 5]);

impl Floods {
    pub const ALL: [Flood; 5] = [
        Flood::Settings,
        Flood::Ping,
        Flood::EmptyFrames,
        Flood::WindowUpdate,
        Flood::Priority,
    ];

    fn record(&self, f: Flood) {
        self.0[f as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self, f: Flood) -> u64 {
        self.0[f as usize].load(Ordering::Relaxed)
    }
}

/// Where the byte stream is, as far as HTTP/2 framing goes.
#[derive(Clone, Copy, Default)]
struct Framing {
    header: [u8; FRAME_HEADER],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    payload_left: usize,
}

impl Framing {
    /// Feeds `bytes`; calls `frame(len, type, flags, stream)` for each frame header completed.
    fn feed(&mut self, mut bytes: &[u8], mut frame: impl FnMut(usize, u8, u8, u32)) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == FRAME_HEADER {
                let h = self.header;
                let len = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                self.have = 0;
                self.payload_left = len;
                frame(len, h[3], h[4], stream);
            }
        }
    }

    fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }
}

/// The client's frames counted against the limits.
#[derive(Default)]
struct Counters {
    window_start: u64,
    settings: u32,
    pings: u32,
    consecutive_empty: u32,
    priorities: u64,
    streams: u64,
    window_updates: u64,
    data_sent: u64,
    last_stream: u32,
}

impl Counters {
    fn frame(&mut self, len: usize, kind: u8, flags: u8, stream: u32) -> Option<Flood> {
        const DATA: u8 = 0x0;
        const HEADERS: u8 = 0x1;
        const PRIORITY: u8 = 0x2;
        const SETTINGS: u8 = 0x4;
        const PING: u8 = 0x6;
        const WINDOW_UPDATE: u8 = 0x8;
        const CONTINUATION: u8 = 0x9;
        const ACK: u8 = 0x1;
        const END_STREAM: u8 = 0x1;
        const END_HEADERS: u8 = 0x4;
        let now = now_ms();
        if now.saturating_sub(self.window_start) >= 1000 {
            self.window_start = now;
            self.settings = 0;
            self.pings = 0;
        }
        let empty = match kind {
            DATA => len == 0 && flags & END_STREAM == 0,
            HEADERS | CONTINUATION => len == 0 && flags & END_HEADERS == 0,
            _ => false,
        };
        if empty {
            self.consecutive_empty += 1;
            if self.consecutive_empty > MAX_CONSECUTIVE_EMPTY {
                return Some(Flood::EmptyFrames);
            }
        } else if matches!(kind, DATA | HEADERS | CONTINUATION) {
            self.consecutive_empty = 0;
        }
        match kind {
            HEADERS if stream > self.last_stream => {
                self.last_stream = stream;
                self.streams += 1;
            }
            SETTINGS if flags & ACK == 0 => {
                self.settings += 1;
                if self.settings > MAX_SETTINGS_PER_SECOND {
                    return Some(Flood::Settings);
                }
            }
            PING if flags & ACK == 0 => {
                self.pings += 1;
                if self.pings > MAX_PINGS_PER_SECOND {
                    return Some(Flood::Ping);
                }
            }
            PRIORITY => {
                self.priorities += 1;
                if self.priorities > MAX_PRIORITY_PER_STREAM * (1 + self.streams) {
                    return Some(Flood::Priority);
                }
            }
            WINDOW_UPDATE => {
                self.window_updates += 1;
                if self.window_updates
                    > FREE_WINDOW_UPDATES + MAX_WINDOW_UPDATES_PER_DATA * self.data_sent
                {
                    return Some(Flood::WindowUpdate);
                }
            }
            _ => {}
        }
        None
    }
}

enum Proto {
    /// Matching the HTTP/2 preface so far, this many bytes.
    Sniffing(usize),
    Http1,
    Http2 {
        inbound: Framing,
        outbound: Framing,
        counters: Box<Counters>,
        /// A flood was seen: the GOAWAY to send (and how much of it is out), then the end.
        goaway: Option<([u8; 17], usize)>,
    },
}

/// A connection's I/O under watch.
pub struct Guarded<IO> {
    io: IO,
    activity: Arc<Activity>,
    floods: Arc<Floods>,
    proto: Proto,
}

impl<IO> Guarded<IO> {
    pub fn new(io: IO, floods: Arc<Floods>) -> (Guarded<IO>, Arc<Activity>) {
        let activity = Arc::new(Activity::default());
        activity.touch();
        let g = Guarded {
            io,
            activity: activity.clone(),
            floods,
            proto: Proto::Sniffing(0),
        };
        (g, activity)
    }
}

fn goaway(last_stream: u32) -> [u8; 17] {
    let mut f = [0u8; 17];
    f[2] = 8; // length
    f[3] = 0x7; // GOAWAY
    f[9..13].copy_from_slice(&last_stream.to_be_bytes());
    f[13..17].copy_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
    f
}

fn flood_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "HTTP/2 flood")
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Guarded<IO> {
    /// Sends what is left of the GOAWAY; `Ready(())` once it is out (or cannot be).
    fn poll_goaway(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Proto::Http2 {
            goaway: Some((frame, sent)),
            ..
        } = &mut self.proto
        else {
            return Poll::Ready(());
        };
        while *sent < frame.len() {
            match Pin::new(&mut self.io).poll_write(cx, &frame[*sent..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(n)) => *sent += n,
                Poll::Pending => return Poll::Pending,
            }
        }
        let _ = ready!(Pin::new(&mut self.io).poll_flush(cx));
        Poll::Ready(())
    }

    /// Notes bytes the server wrote (`written`, in order): activity, and on HTTP/2 where its
    /// frames end and how many DATA frames it sent.
    fn wrote<'a>(&mut self, written: impl Iterator<Item = &'a [u8]>) {
        let mut any = false;
        for b in written.filter(|b| !b.is_empty()) {
            any = true;
            if let Proto::Http2 {
                outbound, counters, ..
            } = &mut self.proto
            {
                outbound.feed(b, |len, kind, _, _| {
                    if kind == 0x0 && len > 0 {
                        counters.data_sent += 1;
                    }
                });
            }
        }
        if any {
            self.activity.touch();
        }
    }

    /// Looks at bytes the client sent; `Some`: a flood, the connection ends.
    fn inspect(&mut self, bytes: &[u8]) -> Option<Flood> {
        let mut bytes = bytes;
        if let Proto::Sniffing(matched) = self.proto {
            let n = (PREFACE.len() - matched).min(bytes.len());
            if bytes[..n] != PREFACE[matched..matched + n] {
                self.proto = Proto::Http1;
                return None;
            }
            if matched + n < PREFACE.len() {
                self.proto = Proto::Sniffing(matched + n);
                return None;
            }
            self.proto = Proto::Http2 {
                inbound: Framing::default(),
                outbound: Framing::default(),
                counters: Box::default(),
                goaway: None,
            };
            bytes = &bytes[n..];
        }
        let Proto::Http2 {
            inbound, counters, ..
        } = &mut self.proto
        else {
            return None;
        };
        let mut flood = None;
        inbound.feed(bytes, |len, kind, flags, stream| {
            if flood.is_none() {
                flood = counters.frame(len, kind, flags, stream);
            }
        });
        flood
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.flooded() {
            ready!(this.poll_goaway(cx));
            return Poll::Ready(Err(flood_error()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if buf.filled().len() == before {
            return Poll::Ready(Ok(()));
        }
        this.activity.touch();
        if matches!(this.proto, Proto::Http1) {
            return Poll::Ready(Ok(()));
        }
        let Some(flood) = this.inspect(&buf.filled()[before..]) else {
            return Poll::Ready(Ok(()));
        };
        // Nothing more of what the client sent reaches the HTTP/2 server.
        buf.set_filled(before);
        this.floods.record(flood);
        this.activity.flooded.store(true, Ordering::Relaxed);
        this.activity.flood.notify_one();
        tracing::warn!(
            flood = flood.as_str(),
            "HTTP/2 flood: GOAWAY(ENHANCE_YOUR_CALM), closing the connection"
        );
        if let Proto::Http2 {
            outbound,
            counters,
            goaway: g,
            ..
        } = &mut this.proto
        {
            // Only between two of the server's own frames; mid-frame, the connection just ends.
            if outbound.at_boundary() {
                *g = Some((goaway(counters.last_stream), 0));
            }
        }
        ready!(this.poll_goaway(cx));
        Poll::Ready(Err(flood_error()))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.activity.flooded() {
            ready!(this.poll_goaway(cx));
            return Poll::Ready(Err(flood_error()));
        }
        let n = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        this.wrote(std::iter::once(&buf[..n]));
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.activity.flooded() {
            ready!(this.poll_goaway(cx));
            return Poll::Ready(Err(flood_error()));
        }
        let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        this.wrote(bufs.iter().map(|b| {
            let take = left.min(b.len());
            left -= take;
            &b[..take]
        }));
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
