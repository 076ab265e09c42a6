//! `weft check` on every YAML file under `testdata/` (found by walking it, so a new file is
//! covered): Istio's, Linkerd's and the Gateway API's own examples and conformance inputs must
//! pass; each file under an `invalid/` or `unsupported/` folder must fail, every error naming
//! the line its first line announces (`# expect-error: FILE:LINE: fragment`).

mod common;

use common::WEFT;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The first line of a file that must be rejected.
const EXPECT: &str = "# expect-error: ";

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// Every `.yaml`/`.yml` file under `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                found.push(p);
            }
        }
    }
    found.sort();
    found
}

/// Whether `file` is one that must be rejected.
fn must_fail(file: &Path) -> bool {
    file.components()
        .any(|c| matches!(c.as_os_str().to_str(), Some("invalid" | "unsupported")))
}

/// `weft check FILE`: exit status, stdout and stderr.
fn check(file: &Path) -> (bool, String, String) {
    let out = Command::new(WEFT).arg("check").arg(file).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `(FILE:LINE:, fragment)` from a first line `# expect-error: FILE:LINE: fragment`.
fn expectation(file: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    let rest = text.lines().next()?.strip_prefix(EXPECT)?;
    let (name, rest) = rest.split_once(':')?;
    let (line, fragment) = rest.split_once(": ")?;
    line.parse::<u32>().ok()?;
    Some((format!("{name}:{line}:"), fragment.trim().to_string()))
}

#[test]
fn weft_check_accepts_every_valid_file_and_rejects_each_invalid_one_at_its_line() {
    let files = yaml_files(&testdata());
    let (bad, good): (Vec<&PathBuf>, Vec<&PathBuf>) = files.iter().partition(|f| must_fail(f));
    // The upstream sets are there (a moved folder must not make this test pass vacuously).
    for folder in ["istio", "linkerd", "gateway-api"] {
        let n = good
            .iter()
            .filter(|f| f.to_string_lossy().contains(&format!("upstream/{folder}/")))
            .count();
        assert!(n >= 10, "testdata/upstream/{folder}: {n} files");
    }
    assert!(bad.len() >= 5, "{bad:?}");

    let mut wrong = Vec::new();
    for f in &good {
        let (ok, stdout, stderr) = check(f);
        if !ok {
            wrong.push(format!("{}: rejected:\n{stdout}{stderr}", f.display()));
        }
    }
    for f in &bad {
        let Some((at, fragment)) = expectation(f) else {
            wrong.push(format!(
                "{}: the first line must be `{EXPECT}FILE:LINE: fragment`",
                f.display()
            ));
            continue;
        };
        let name = f.file_name().unwrap().to_string_lossy();
        assert!(at.starts_with(&format!("{name}:")), "{}: {at}", f.display());
        let (ok, stdout, stderr) = check(f);
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        let at_line = |l: &&str| l.contains(&format!("/{at}"));
        if ok
            || errors.is_empty()
            || !errors.iter().all(at_line)
            || !errors.iter().any(|l| l.contains(&fragment))
        {
            wrong.push(format!(
                "{}: want every error at {at} and one saying `{fragment}`, got (exit ok: {ok}):\n\
                 {stdout}{stderr}",
                f.display()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} files:\n{}",
        wrong.len(),
        files.len(),
        wrong.join("\n")
    );
}
