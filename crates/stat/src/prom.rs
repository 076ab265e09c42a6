//! A small parser for the Prometheus text exposition format (and the OpenMetrics text the
//! proxies' admin `/metrics` serves): samples with their name, labels and value.
//!
//! What it reads: `# …` lines (HELP, TYPE, UNIT, EOF, comments) are skipped; a sample is
//! `name[{label="value",…}] value [timestamp] [# exemplar]`. Label values may hold the escapes
//! `\\`, `\"` and `\n`; other backslashes are kept as written. Values are floats, `+Inf`, `-Inf`
//! or `NaN`. A line that is none of these is an error naming its line number.

use std::fmt;

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    /// In the order written.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Milliseconds since the Unix epoch (text format) or seconds (OpenMetrics), as written.
    pub timestamp: Option<f64>,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Every sample of `text`.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    parse_only(text, |_| true)
}

/// The samples whose metric name `wanted` accepts; other lines are skipped after reading their
/// name (so a large exposition costs little beyond the families asked for).
pub fn parse_only(text: &str, wanted: impl Fn(&str) -> bool) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start().trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: String| ParseError {
            line: i + 1,
            message,
        };
        let mut cur = Cursor { s: line, pos: 0 };
        let name = cur.name(true).map_err(err)?;
        if !wanted(name) {
            continue;
        }
        let name = name.to_string();
        let mut spaced = cur.skip_ws();
        let labels = if cur.peek() == Some('{') {
            cur.pos += 1;
            let labels = cur.labels().map_err(err)?;
            spaced = cur.skip_ws();
            labels
        } else {
            Vec::new()
        };
        if !spaced {
            return Err(err(format!("expected a space before the value of {name}")));
        }
        let value = cur.number().map_err(err)?;
        let had_space = cur.skip_ws();
        let mut timestamp = None;
        if had_space && !cur.at_end() && cur.peek() != Some('#') {
            timestamp = Some(cur.number().map_err(err)?);
            cur.skip_ws();
        }
        // An OpenMetrics exemplar (` # {trace_id="…"} 1.0`) is not needed: ignored.
        if !cur.at_end() && cur.peek() != Some('#') {
            return Err(err(format!(
                "unexpected {:?} after the value of {name}",
                cur.rest()
            )));
        }
        out.push(Sample {
            name,
            labels,
            value,
            timestamp,
        });
    }
    Ok(out)
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    /// Skips spaces and tabs; whether there were any.
    fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// A metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) or, without `colons`, a label name.
    fn name(&mut self, colons: bool) -> Result<&'a str, String> {
        let start = self.pos;
        let bytes = self.s.as_bytes();
        while self.pos < bytes.len() {
            let c = bytes[self.pos];
            let ok = c.is_ascii_alphabetic()
                || c == b'_'
                || (colons && c == b':')
                || (self.pos > start && c.is_ascii_digit());
            if !ok {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            let what = if colons { "metric" } else { "label" };
            return Err(format!("expected a {what} name at {:?}", self.rest()));
        }
        Ok(&self.s[start..self.pos])
    }

    /// `name="value",…}` (the `{` already read); a trailing comma is allowed.
    fn labels(&mut self) -> Result<Vec<(String, String)>, String> {
        let mut labels = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some('}') {
                self.pos += 1;
                return Ok(labels);
            }
            let name = self.name(false)?.to_string();
            self.skip_ws();
            if self.peek() != Some('=') {
                return Err(format!("expected '=' after label {name}"));
            }
            self.pos += 1;
            self.skip_ws();
            if self.peek() != Some('"') {
                return Err(format!("expected '\"' to open the value of label {name}"));
            }
            self.pos += 1;
            let value = self.quoted(&name)?;
            labels.push((name, value));
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some('}') => {}
                _ => return Err(format!("expected ',' or '}}' at {:?}", self.rest())),
            }
        }
    }

    /// A label value up to its closing quote, unescaped.
    fn quoted(&mut self, label: &str) -> Result<String, String> {
        let mut v = String::new();
        let mut chars = self.s[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(v);
                }
                '\\' => match chars.next() {
                    Some((_, '\\')) => v.push('\\'),
                    Some((_, '"')) => v.push('"'),
                    Some((_, 'n')) => v.push('\n'),
                    Some((_, other)) => {
                        v.push('\\');
                        v.push(other);
                    }
                    None => break,
                },
                c => v.push(c),
            }
        }
        Err(format!("unterminated value of label {label}"))
    }

    /// A float, `+Inf`, `-Inf` or `NaN`, up to the next space.
    fn number(&mut self) -> Result<f64, String> {
        let start = self.pos;
        while !self.at_end() && !matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += self.peek().map_or(1, char::len_utf8);
        }
        let tok = &self.s[start..self.pos];
        parse_value(tok).ok_or_else(|| format!("{tok:?} is not a number"))
    }
}

/// A sample value or an `le` bound: a float, `+Inf`/`Inf`, `-Inf` or `NaN`.
pub fn parse_value(tok: &str) -> Option<f64> {
    match tok {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        // Rust also reads `infinity` and friends; the format does not have them.
        t if t
            .bytes()
            .any(|b| b.is_ascii_alphabetic() && !matches!(b, b'e' | b'E')) =>
        {
            None
        }
        t => t.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Sample {
        let mut v = parse(line).unwrap();
        assert_eq!(v.len(), 1, "{line}");
        v.remove(0)
    }

    #[test]
    fn reads_what_the_proxies_emit() {
        let text = r#"# HELP istio_requests Requests handled, counted once by each reporting proxy.
# TYPE istio_requests counter
istio_requests_total{reporter="destination",source_principal="spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway",response_code="500",connection_security_policy="mutual_tls"} 9
# TYPE istio_request_duration_milliseconds histogram
istio_request_duration_milliseconds_sum{reporter="destination"} 16.093
istio_request_duration_milliseconds_count{reporter="destination"} 9
istio_request_duration_milliseconds_bucket{le="0.5",reporter="destination"} 0
istio_request_duration_milliseconds_bucket{le="1.0",reporter="destination"} 3
istio_request_duration_milliseconds_bucket{le="+Inf",reporter="destination"} 9
weft_app_ready 1
weft_config_last_update_timestamp_seconds 1795651912.2608526
# EOF
"#;
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 8);
        assert_eq!(s[0].name, "istio_requests_total");
        assert_eq!(s[0].label("response_code"), Some("500"));
        assert_eq!(s[0].label("connection_security_policy"), Some("mutual_tls"));
        assert_eq!(s[0].value, 9.0);
        assert_eq!(s[1].value, 16.093);
        assert_eq!(s[4].label("le"), Some("1.0"));
        assert_eq!(s[5].label("le").and_then(parse_value), Some(f64::INFINITY));
        assert_eq!(s[6].name, "weft_app_ready");
        assert!(s[6].labels.is_empty());
        assert_eq!(s[7].value, 1795651912.2608526);
    }

    #[test]
    fn escapes_in_label_values() {
        let s = one(r#"m{a="say \"hi\"",b="C:\\dir\\",c="two\nlines",d="\x",e=""} 1"#);
        assert_eq!(s.label("a"), Some(r#"say "hi""#));
        assert_eq!(s.label("b"), Some(r"C:\dir\"));
        assert_eq!(s.label("c"), Some("two\nlines"));
        assert_eq!(s.label("d"), Some(r"\x"));
        assert_eq!(s.label("e"), Some(""));
        // A quote, comma or brace inside a value is part of it.
        let s = one(r#"m{path="/a,b}{\"c\"",x="y"} 2"#);
        assert_eq!(s.label("path"), Some(r#"/a,b}{"c""#));
        assert_eq!(s.label("x"), Some("y"));
    }

    #[test]
    fn values_timestamps_spacing_and_exemplars() {
        assert_eq!(one("m +Inf").value, f64::INFINITY);
        assert_eq!(one("m -Inf").value, f64::NEG_INFINITY);
        assert!(one("m NaN").value.is_nan());
        assert_eq!(one("m 1e3").value, 1000.0);
        assert_eq!(one("m -0.25").value, -0.25);
        let s = one("http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000");
        assert_eq!(s.value, 1027.0);
        assert_eq!(s.timestamp, Some(1395066363000.0));
        let s = one("  m{ a = \"1\" , b=\"2\", }\t7  ");
        assert_eq!(s.labels.len(), 2);
        assert_eq!(s.value, 7.0);
        assert_eq!(s.timestamp, None);
        let s = one(r#"m_bucket{le="5.0"} 3 # {trace_id="abc"} 4.2 1.6e9"#);
        assert_eq!(s.value, 3.0);
        let s = one("ns:sub:metric_total{} 5\r");
        assert_eq!(s.name, "ns:sub:metric_total");
        assert!(s.labels.is_empty());
    }

    #[test]
    fn errors_name_the_line() {
        for bad in [
            "m{a=\"1\" 1",
            "m{a=1} 1",
            "m{a=\"unterminated} 1",
            "m{1a=\"x\"} 1",
            "m{a=\"1\"}",
            "m{a=\"1\"}1",
            "m abc",
            "m infinity",
            "m 1 2 3",
            "{a=\"1\"} 1",
            "m{a=\"1\"\"} 1",
        ] {
            let e = parse(&format!("# HELP m x\nok 1\n{bad}\n")).unwrap_err();
            assert_eq!(e.line, 3, "{bad}: {e}");
        }
    }

    #[test]
    fn unwanted_families_are_skipped_unparsed() {
        let text = "a_total{x=\"1\"} 1\nb_total{broken 2\na_total{x=\"2\"} 3\n";
        let s = parse_only(text, |n| n.starts_with("a_")).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].label("x"), Some("2"));
        assert!(parse(text).is_err());
    }

    #[test]
    fn blank_lines_and_comments_only() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("\n\n# EOF\n   # indented comment\n")
            .unwrap()
            .is_empty());
    }
}
