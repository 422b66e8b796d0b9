//! The configuration's source files, kept in memory so that every diagnostic can point at
//! the exact line and column it is about.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// Index of a file in a [`Sources`] collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(usize);

impl FileId {
    /// For text that is not one of the configuration's files (a `templatefile` template):
    /// spans into it are never rendered.
    pub fn detached() -> FileId {
        FileId(usize::MAX)
    }
}

/// A byte range in one source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub file: FileId,
    pub range: Range<usize>,
}

/// A resolved position, 1-based like editors and compilers show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The whole source line the position is on, for the caret display.
    pub text: String,
    /// How many characters the caret underlines (at least one).
    pub width: usize,
}

#[derive(Debug, Default)]
pub struct Sources {
    files: Vec<(PathBuf, String)>,
}

impl Sources {
    pub fn add(&mut self, path: impl Into<PathBuf>, text: String) -> FileId {
        self.files.push((path.into(), text));
        FileId(self.files.len() - 1)
    }

    pub fn text(&self, file: FileId) -> &str {
        &self.files[file.0].1
    }

    pub fn path(&self, file: FileId) -> &Path {
        &self.files[file.0].0
    }

    /// Turns a byte span into line, column and the line's text.
    pub fn position(&self, span: &Span) -> Position {
        let text = self.text(span.file);
        let start = floor_char_boundary(text, span.range.start.min(text.len()));
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line = text[..start].matches('\n').count() + 1;
        let column = text[line_start..start].chars().count() + 1;
        let end = floor_char_boundary(text, span.range.end.clamp(start, line_end));
        let width = text[start..end].chars().count().max(1);
        Position {
            path: self.path(span.file).to_path_buf(),
            line,
            column,
            text: text[line_start..line_end]
                .trim_end_matches('\r')
                .to_string(),
            width,
        }
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while index > 0 && !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_carry_the_line() {
        let mut sources = Sources::default();
        let file = sources.add("web.hcl", "a = 1\nfleet \"web\" {\n  bad = 2\n}\n".into());
        let at = sources.position(&Span {
            file,
            range: 22..25,
        });
        assert_eq!((at.line, at.column, at.width), (3, 3, 3));
        assert_eq!(at.text, "  bad = 2");
    }
}
