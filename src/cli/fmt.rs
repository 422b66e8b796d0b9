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
    /// Show the changes as a diff (the files are rewritten too, unless --check).
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

/// A unified diff of two texts, with three lines of context around each change.
pub fn diff(name: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(name, &format!("{name} (formatted)"))
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_diff_shows_removed_lines_before_their_replacement() {
        let shown = super::diff("a.hcl", "x\n  a=1\ny\n", "x\na = 1\ny\n");
        assert_eq!(
            shown,
            "--- a.hcl\n+++ a.hcl (formatted)\n@@ -1,3 +1,3 @@\n x\n-  a=1\n+a = 1\n y\n"
        );
    }
}
