//! Plain-text output the live views (`weft stat`, `weft top`) share: left-aligned columns and
//! latencies in milliseconds.

/// `rows` (the header first) as left-aligned columns two spaces apart, one line each, trailing
/// spaces trimmed.
pub fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A latency with three significant digits or so: `123ms`, `12.3ms`, `1.23ms`.
pub fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}ms")
    } else if v >= 10.0 {
        format!("{v:.1}ms")
    } else {
        format!("{v:.2}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_trim() {
        let rows = [
            ["A".to_string(), "BB".into(), "C".into()],
            ["aaa".to_string(), "b".into(), "".into()],
        ];
        assert_eq!(columns(&rows), "A    BB  C\naaa  b\n");
        assert_eq!(
            (ms(123.4), ms(12.34), ms(1.234)),
            ("123ms".into(), "12.3ms".into(), "1.23ms".into())
        );
    }
}
