//! Problems found in the user's configuration, reported together and rendered the way
//! rustc does: a summary, `--> file:line:col`, the source line and a caret.

use super::source::{Sources, Span};
use std::fmt::Write;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub summary: String,
    pub span: Option<Span>,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(summary: impl Into<String>, span: Option<Span>) -> Self {
        Diagnostic {
            summary: summary.into(),
            span,
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn render(&self, sources: &Sources) -> String {
        let mut out = format!("error: {}\n", self.summary);
        if let Some(span) = &self.span {
            let at = sources.position(span);
            let number = at.line.to_string();
            let pad = " ".repeat(number.len());
            let _ = writeln!(
                out,
                "{pad}--> {}:{}:{}",
                at.path.display(),
                at.line,
                at.column
            );
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{number} | {}", at.text);
            let lead: String = at
                .text
                .chars()
                .take(at.column - 1)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "{pad} | {lead}{}", "^".repeat(at.width));
            if let Some(hint) = &self.hint {
                let _ = writeln!(out, "{pad} = hint: {hint}");
            }
        } else if let Some(hint) = &self.hint {
            let _ = writeln!(out, "  = hint: {hint}");
        }
        out
    }
}

/// All diagnostics of one load, rendered together so the user fixes everything at once.
#[derive(Debug, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }

    pub fn error(&mut self, summary: impl Into<String>, span: Option<Span>) {
        self.push(Diagnostic::new(summary, span));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn render(&self, sources: &Sources) -> String {
        let mut out: String = self.0.iter().map(|d| d.render(sources) + "\n").collect();
        let n = self.0.len();
        let _ = writeln!(
            out,
            "{n} error{} in the configuration",
            if n == 1 { "" } else { "s" }
        );
        out
    }
}

/// The closest candidate by edit distance, for "did you mean" hints.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        let known = ["instance_type", "subnets", "security_groups"];
        assert_eq!(did_you_mean("instance_typ", &known), Some("instance_type"));
        assert_eq!(did_you_mean("subnet", &known), Some("subnets"));
        assert_eq!(did_you_mean("colour", &known), None);
    }

    #[test]
    fn renders_location_and_caret() {
        let mut sources = Sources::default();
        let file = sources.add("web.hcl", "fleet \"web\" {\n  instance_typ = 1\n}\n".into());
        let d = Diagnostic::new(
            "unknown attribute `instance_typ`",
            Some(Span {
                file,
                range: 16..28,
            }),
        )
        .with_hint("did you mean `instance_type`?");
        assert_eq!(
            d.render(&sources),
            "error: unknown attribute `instance_typ`\n --> web.hcl:2:3\n  |\n2 |   instance_typ = 1\n  |   ^^^^^^^^^^^^\n  = hint: did you mean `instance_type`?\n"
        );
    }
}
