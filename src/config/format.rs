//! Canonical layout of `*.hcl` files, as `terraform fmt` lays them out: two spaces per
//! level, the `=` of neighbouring attributes aligned, no trailing whitespace, no runs of
//! blank lines. It works on lines rather than on the syntax tree because `hcl::format`
//! drops comments and `hcl-edit` keeps them in decorations it cannot lay out; lines keep
//! every comment where it was. The contents of heredocs and block comments are never
//! touched, and the result is checked to mean exactly what the input meant.

use super::guard;

/// The formatted text, or why the text cannot be formatted (a syntax error).
pub fn format(text: &str) -> Result<String, String> {
    super::load::on_big_stack(|| format_here(text))
        .unwrap_or_else(|| Err("internal error while formatting (a bug in immune)".into()))
}

fn format_here(text: &str) -> Result<String, String> {
    // Lines are split at `\n` only; a `\r` before it is trailing whitespace on code lines
    // and kept inside heredocs. (Replacing "\r\n" instead removed one `\r` of `\r\r\n`
    // per run, so formatting was not idempotent: found by the fuzz target.)
    let before = parse(text)?;
    let lines = scan(text);
    let out = layout(&lines);
    // A formatter must never change what a file means; if it would, that is a bug here,
    // and the file is better left alone than broken.
    match parse(&out) {
        Ok(after) if after == before => Ok(out),
        _ => Err(
            "formatting would change the file's meaning (a bug in immune fmt); left unchanged"
                .into(),
        ),
    }
}

fn parse(text: &str) -> Result<hcl::Body, String> {
    if let Err((message, offset)) = guard::check(text) {
        return Err(format!("{message} at {}", line_col(text, offset)));
    }
    hcl_edit::parser::parse_body(text).map_err(|e| {
        format!(
            "syntax error at {}: {}",
            line_col(text, e.location().offset()),
            e.message()
        )
    })?;
    hcl::from_str(text).map_err(|e| format!("syntax error: {e}"))
}

fn line_col(text: &str, offset: usize) -> String {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}")
}

/// One source line and what the scan learnt about it.
struct Line<'t> {
    text: &'t str,
    /// Inside a heredoc or block comment: kept byte for byte.
    verbatim: bool,
    /// The indentation level.
    level: usize,
    /// The line leaves brackets open for the following lines.
    opens: bool,
}

enum Open {
    /// A bracket (or an interpolation's `${`) and the line it was opened on.
    Bracket(usize),
    Quote,
    Heredoc(String),
    Comment,
}

fn scan(text: &str) -> Vec<Line<'_>> {
    let mut stack: Vec<Open> = Vec::new();
    let mut lines = Vec::new();
    for (number, line) in text.split('\n').enumerate() {
        let verbatim = matches!(
            stack.last(),
            Some(Open::Heredoc(_) | Open::Comment | Open::Quote)
        );
        if let Some(Open::Heredoc(marker)) = stack.last() {
            if line.trim() == marker {
                stack.pop();
            }
            lines.push(Line {
                text: line,
                verbatim: true,
                level: 0,
                opens: false,
            });
            continue;
        }
        // Leading closers belong to the level they close.
        let mut probe = stack.len();
        if !verbatim {
            for c in line.trim_start().chars() {
                if matches!(c, '}' | ']' | ')')
                    && probe > 0
                    && matches!(stack[probe - 1], Open::Bracket(_))
                {
                    probe -= 1;
                } else {
                    break;
                }
            }
        }
        let level = levels(&stack[..probe]);
        scan_line(line, number, &mut stack);
        let opens = stack
            .iter()
            .any(|o| matches!(o, Open::Bracket(n) if *n == number));
        lines.push(Line {
            text: line,
            verbatim,
            level,
            opens,
        });
    }
    lines
}

/// One level per line that left brackets open: `f({` on one line indents once.
fn levels(stack: &[Open]) -> usize {
    let mut seen: Vec<usize> = Vec::new();
    for open in stack {
        if let Open::Bracket(n) = open {
            if !seen.contains(n) {
                seen.push(*n);
            }
        }
    }
    seen.len()
}

fn scan_line(line: &str, number: usize, stack: &mut Vec<Open>) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match stack.last() {
            Some(Open::Comment) => {
                if bytes[i..].starts_with(b"*/") {
                    stack.pop();
                    i += 1;
                }
            }
            Some(Open::Quote) => match c {
                b'\\' => i += 1,
                b'"' => {
                    stack.pop();
                }
                b'$' | b'%' if bytes.get(i + 1) == Some(&b'{') => {
                    // `$${` is an escaped, literal `${`.
                    if i > 0 && bytes[i - 1] == c {
                    } else {
                        stack.push(Open::Bracket(number));
                        i += 1;
                    }
                }
                _ => {}
            },
            Some(Open::Heredoc(_)) => return,
            _ => match c {
                b'#' => return,
                b'/' if bytes.get(i + 1) == Some(&b'/') => return,
                b'/' if bytes.get(i + 1) == Some(&b'*') => {
                    stack.push(Open::Comment);
                    i += 1;
                }
                b'"' => stack.push(Open::Quote),
                b'<' if bytes[i..].starts_with(b"<<") => {
                    let rest = line[i + 2..].strip_prefix('-').unwrap_or(&line[i + 2..]);
                    let marker: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-')
                        .collect();
                    if !marker.is_empty() && rest[marker.len()..].trim().is_empty() {
                        stack.push(Open::Heredoc(marker));
                        return;
                    }
                    i += 1;
                }
                b'{' | b'[' | b'(' => stack.push(Open::Bracket(number)),
                b'}' | b']' | b')' => {
                    if matches!(stack.last(), Some(Open::Bracket(_))) {
                        stack.pop();
                    }
                }
                _ => {}
            },
        }
        i += 1;
    }
}

/// `key = value` with the key alone before the `=`: the key and the rest.
fn attribute(line: &str) -> Option<(&str, &str)> {
    let key_len = line
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(line.len());
    if key_len == 0 || !line.starts_with(|c: char| c.is_alphabetic() || c == '_') {
        return None;
    }
    let rest = line[key_len..].trim_start();
    let value = rest.strip_prefix('=')?;
    if value.starts_with(['=', '>']) {
        return None;
    }
    Some((&line[..key_len], value.trim_start()))
}

fn layout(lines: &[Line]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        if line.verbatim {
            out.push(line.text.to_string());
            i += 1;
            continue;
        }
        let trimmed = line.text.trim();
        if trimmed.is_empty() {
            out.push(String::new());
            i += 1;
            continue;
        }
        if attribute(trimmed).is_none() {
            out.push(format!("{}{trimmed}", "  ".repeat(line.level)));
            i += 1;
            continue;
        }
        // A group: neighbouring attributes at one level; a multi-line value ends it.
        let mut end = i;
        while end < lines.len() {
            let l = &lines[end];
            if l.verbatim || l.level != line.level || attribute(l.text.trim()).is_none() {
                break;
            }
            end += 1;
            if l.opens {
                break;
            }
        }
        let width = lines[i..end]
            .iter()
            .filter_map(|l| attribute(l.text.trim()))
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        for l in &lines[i..end] {
            let (key, value) = attribute(l.text.trim()).expect("grouped lines are attributes");
            let pad = " ".repeat(width - key.chars().count());
            let text = format!("{}{key}{pad} = {value}", "  ".repeat(l.level));
            out.push(text.trim_end().to_string());
        }
        i = end;
    }
    // No leading, trailing or repeated blank lines (outside heredocs).
    let mut result = String::new();
    let mut blank_run = 0;
    for (n, text) in out.iter().enumerate() {
        let blank = text.is_empty() && !lines[n].verbatim;
        if blank {
            blank_run += 1;
            continue;
        }
        if blank_run > 0 && !result.is_empty() {
            result.push('\n');
        }
        blank_run = 0;
        result.push_str(text);
        result.push('\n');
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indents_aligns_and_keeps_comments() {
        let input = "# top\n\n\nfleet \"web\" {\n# about the image\n    image {\n    source_ami=\"ami-1\" # pinned\n      instance_type =   \"t3.small\"\n  }\n    user_data = templatefile(\"boot.sh\", {\n  release = var.release\n      })\n  x = <<EOT\n   keep   \nEOT\n}   \n\n";
        let expected = "# top\n\nfleet \"web\" {\n  # about the image\n  image {\n    source_ami    = \"ami-1\" # pinned\n    instance_type = \"t3.small\"\n  }\n  user_data = templatefile(\"boot.sh\", {\n    release = var.release\n  })\n  x = <<EOT\n   keep   \nEOT\n}\n";
        let once = format(input).unwrap();
        assert_eq!(once, expected);
        assert_eq!(format(&once).unwrap(), once);
    }

    #[test]
    fn a_multi_line_value_ends_an_alignment_group() {
        let input = "locals {\n  a = 1\n  long_name = {\n    k = 1\n  }\n  b = 2\n  cc = 3\n}\n";
        let expected =
            "locals {\n  a         = 1\n  long_name = {\n    k = 1\n  }\n  b  = 2\n  cc = 3\n}\n";
        assert_eq!(format(input).unwrap(), expected);
    }

    #[test]
    fn multibyte_text_in_comments_identifiers_and_strings() {
        // Regression: the scan walks bytes and must never slice inside a character.
        let input = "é = 1 /* é ü */
b = \"é\" # ü
c = é<<2\n";
        let _ = format(input);
        let ok = "a = 1 /* é\nü */\nb = \"é\" # ü\n";
        assert_eq!(format(ok).unwrap(), ok);
    }

    #[test]
    fn windows_line_endings_become_unix_ones_and_stay_so() {
        let once = format("a=1\r\n\r\nb = 2\r\n").unwrap();
        assert_eq!(once, "a = 1\n\nb = 2\n");
        assert_eq!(format(&once).unwrap(), once);
    }

    #[test]
    fn syntax_errors_are_refused_with_a_position() {
        let err = format("a = {\n").unwrap_err();
        assert!(err.starts_with("syntax error at line"), "{err}");
        let deep = format!("a = {}", "[".repeat(10_000));
        assert!(format(&deep)
            .unwrap_err()
            .contains("nested more than 100 levels"));
    }
}
