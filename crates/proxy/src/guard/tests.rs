use super::*;

fn frame(len: usize, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend(std::iter::repeat_n(0u8, len));
    f
}

#[test]
fn frames_are_found_across_any_split() {
    let mut bytes = frame(3, 0x1, 0x4, 1);
    bytes.extend(frame(0, 0x4, 0, 0));
    bytes.extend(frame(8, 0x6, 0, 0));
    for split in 1..bytes.len() {
        let mut f = Framing::default();
        let mut seen = Vec::new();
        for chunk in bytes.chunks(split) {
            f.feed(chunk, |len, kind, _, stream| seen.push((len, kind, stream)));
        }
        assert_eq!(
            seen,
            [(3, 0x1, 1), (0, 0x4, 0), (8, 0x6, 0)],
            "split {split}"
        );
        assert!(f.at_boundary());
    }
}

fn sniffed(bytes: &[u8]) -> (Guarded<tokio::io::DuplexStream>, Option<Flood>) {
    let (io, _other) = tokio::io::duplex(64);
    let (mut g, _) = Guarded::new(io, Arc::default());
    let flood = g.inspect(bytes);
    (g, flood)
}

#[test]
fn http1_is_left_alone_and_http2_is_counted() {
    let (g, _) = sniffed(b"GET / HTTP/1.1\r\n");
    assert!(matches!(g.proto, Proto::Http1));
    let mut h2 = PREFACE.to_vec();
    h2.extend(frame(0, 0x4, 0, 0));
    let (g, flood) = sniffed(&h2);
    assert!(matches!(g.proto, Proto::Http2 { .. }));
    assert_eq!(flood, None);
}

#[test]
fn each_flood_is_caught_at_its_limit() {
    let cases: [(Vec<u8>, u64, Flood); 5] = [
        (
            frame(8, 0x6, 0, 0),
            MAX_PINGS_PER_SECOND as u64,
            Flood::Ping,
        ),
        (
            frame(0, 0x4, 0, 0),
            MAX_SETTINGS_PER_SECOND as u64,
            Flood::Settings,
        ),
        (
            frame(0, 0x0, 0, 1),
            MAX_CONSECUTIVE_EMPTY as u64,
            Flood::EmptyFrames,
        ),
        (
            frame(4, 0x8, 0, 0),
            FREE_WINDOW_UPDATES,
            Flood::WindowUpdate,
        ),
        (
            frame(5, 0x2, 0, 3),
            MAX_PRIORITY_PER_STREAM,
            Flood::Priority,
        ),
    ];
    for (one, allowed, want) in cases {
        let (mut g, _) = sniffed(PREFACE);
        for i in 0..allowed {
            assert_eq!(g.inspect(&one), None, "{want:?}: frame {i} is allowed");
        }
        assert_eq!(g.inspect(&one), Some(want));
    }
    // ACKs and requests are not floods.
    let (mut g, _) = sniffed(PREFACE);
    for _ in 0..10_000 {
        assert_eq!(g.inspect(&frame(8, 0x6, 0x1, 0)), None);
    }
}

#[test]
fn the_goaway_says_enhance_your_calm() {
    let f = goaway(7);
    let mut framing = Framing::default();
    let mut seen = None;
    framing.feed(&f, |len, kind, _, _| seen = Some((len, kind)));
    assert_eq!(seen, Some((8, 0x7)));
    assert_eq!(u32::from_be_bytes(f[9..13].try_into().unwrap()), 7);
    assert_eq!(u32::from_be_bytes(f[13..17].try_into().unwrap()), 0xb);
}
