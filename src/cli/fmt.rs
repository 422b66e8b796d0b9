//! `immune fmt`: rewrite the directory's `*.hcl` files in the canonical layout, or with
//! `--check` only say which ones differ (for CI), with `--diff` showing how.

use super::{CliError, Success};
use crate::config::format::format;
use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct FmtArgs {
    /// Change nothing; fail when a file is not formatted.
    #[arg(long)]
    pub check: bool,
    /// Show the changes as a diff.
    #[arg(long)]
    pub diff: bool,
}

pub fn run(dir: &Path, args: &FmtArgs) -> Result<Success, CliError> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| CliError::Message(format!("error: cannot read {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "hcl") && p.is_file())
        .collect();
    paths.sort();
    let mut errors = Vec::new();
    let mut unformatted = Vec::new();
    for path in &paths {
        let shown = path.strip_prefix(dir).unwrap_or(path).display().to_string();
        let text = match std::fs::read(path).map(String::from_utf8) {
            Ok(Ok(text)) => text,
            Ok(Err(_)) => {
                errors.push(format!("error: {shown} is not valid UTF-8 text"));
                continue;
            }
            Err(e) => {
                errors.push(format!("error: cannot read {shown}: {e}"));
                continue;
            }
        };
        let formatted = match format(&text) {
            Ok(f) => f,
            Err(e) => {
                errors.push(format!("error: cannot format {shown}: {e}"));
                continue;
            }
        };
        if formatted == text {
            continue;
        }
        unformatted.push(shown.clone());
        if args.diff {
            print!("{}", diff(&shown, &text, &formatted));
        }
        if !args.check {
            std::fs::write(path, &formatted)
                .map_err(|e| CliError::Message(format!("error: cannot write {shown}: {e}")))?;
            if !args.diff {
                println!("{shown}");
            }
        }
    }
    if !errors.is_empty() {
        return Err(CliError::Message(errors.join("\n")));
    }
    if args.check && !unformatted.is_empty() {
        return Err(CliError::Message(format!(
            "error: {} not formatted: {}\n  = hint: run `immune fmt` to fix",
            if unformatted.len() == 1 {
                "file"
            } else {
                "files"
            },
            unformatted.join(", ")
        )));
    }
    Ok(Success::Done)
}

/// A unified diff of two texts, line by line (longest common subsequence; files are small).
pub fn diff(name: &str, old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = format!("--- {name}\n+++ {name} (formatted)\n");
    let (mut i, mut j) = (0, 0);
    // Changed lines are shown in hunks, each headed by where it starts in both files.
    let mut hunk: Option<String> = None;
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out += &hunk.take().unwrap_or_default();
            i += 1;
            j += 1;
            continue;
        }
        let h = hunk.get_or_insert_with(|| format!("@@ -{} +{} @@\n", i + 1, j + 1));
        // Removed lines first, then the lines that replace them.
        if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            *h += &format!("-{}\n", a[i]);
            i += 1;
        } else {
            *h += &format!("+{}\n", b[j]);
            j += 1;
        }
    }
    out += &hunk.unwrap_or_default();
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_diff_shows_removed_lines_before_their_replacement() {
        let shown = super::diff("a.hcl", "x\n  a=1\ny\n", "x\na = 1\ny\n");
        assert_eq!(
            shown,
            "--- a.hcl\n+++ a.hcl (formatted)\n@@ -2 +2 @@\n-  a=1\n+a = 1\n"
        );
    }
}
