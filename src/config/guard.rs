//! A scan before parsing: `hcl-edit`'s parser is recursive, so a few hundred nested
//! brackets or a long chain of operators overflow the stack and abort the process instead
//! of ending in an error. Real configurations nest a handful of levels; the limits here
//! are far above that and far below what the parser survives on its thread (see
//! `load::PARSER_STACK`).

/// Brackets, braces, parentheses and template interpolations open at once.
pub const MAX_NESTING: usize = 100;
/// Operator characters in one expression line (each may add a level of recursion).
pub const MAX_OPERATORS: usize = 2000;

/// The first place where `text` goes beyond the limits: a message and a byte offset.
pub fn check(text: &str) -> Result<(), (String, usize)> {
    let bytes = text.as_bytes();
    // What each open level is: a bracket, a string (which holds interpolations), or a
    // heredoc ending at the given marker.
    let mut stack: Vec<Level> = Vec::new();
    let mut operators = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let in_text = matches!(stack.last(), Some(Level::Quote | Level::Heredoc(_)));
        if in_text {
            match (c, bytes.get(i + 1)) {
                (b'\\', _) if matches!(stack.last(), Some(Level::Quote)) => i += 1,
                (b'$' | b'%', Some(b'{')) => {
                    stack.push(Level::Bracket);
                    i += 1;
                }
                (b'"', _) if matches!(stack.last(), Some(Level::Quote)) => {
                    stack.pop();
                }
                (b'\n', _) => {
                    if let Some(Level::Heredoc(marker)) = stack.last() {
                        let rest = &text[i + 1..];
                        let line = rest.split('\n').next().unwrap_or("");
                        if line.trim() == marker.as_str() {
                            stack.pop();
                            i += line.len();
                        }
                    }
                }
                _ => {}
            }
        } else {
            match c {
                b'#' => i = skip_line(bytes, i),
                b'/' if bytes.get(i + 1) == Some(&b'/') => i = skip_line(bytes, i),
                b'/' if bytes.get(i + 1) == Some(&b'*') => {
                    i = text[i + 2..]
                        .find("*/")
                        .map_or(bytes.len(), |j| i + 2 + j + 1);
                }
                b'"' => stack.push(Level::Quote),
                b'<' if bytes.get(i + 1) == Some(&b'<') => {
                    if let Some((marker, end)) = heredoc_start(text, i + 2) {
                        stack.push(Level::Heredoc(marker));
                        // Continue at the newline that ends the introducer line.
                        i = end;
                        continue;
                    }
                    operators += 2;
                    i += 1;
                }
                b'(' => stack.push(Level::Bracket),
                b'[' => stack.push(Level::Bracket),
                b'{' => stack.push(Level::Brace),
                b')' | b']' | b'}' => {
                    // A mismatch is the parser's to report; only depth matters here.
                    if matches!(stack.last(), Some(Level::Bracket | Level::Brace)) {
                        stack.pop();
                    }
                }
                // A newline ends an attribute in a body and an item in an object; only
                // inside ( ), [ ] and ${ } can an expression go on to the next line.
                b'\n' if matches!(stack.last(), None | Some(Level::Brace)) => operators = 0,
                b'+' | b'-' | b'*' | b'/' | b'%' | b'!' | b'&' | b'|' | b'=' | b'<' | b'>'
                | b'?' => {
                    operators += 1;
                    if operators > MAX_OPERATORS {
                        return Err((
                            format!(
                                "expression has more than {MAX_OPERATORS} operators; split it up with locals"
                            ),
                            i,
                        ));
                    }
                }
                _ => {}
            }
        }
        if stack.len() > MAX_NESTING {
            return Err((format!("nested more than {MAX_NESTING} levels deep"), i));
        }
        i += 1;
    }
    Ok(())
}

enum Level {
    /// `{`: a block body or an object.
    Brace,
    /// `(`, `[`, or a template's `${` / `%{`.
    Bracket,
    Quote,
    Heredoc(String),
}

fn skip_line(bytes: &[u8], i: usize) -> usize {
    // Stop before the newline so that it is seen (it resets the operator count).
    bytes[i..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |j| i + j - 1)
}

/// `<<EOF` or `<<-EOF` up to the end of the line: the marker and the newline's offset.
fn heredoc_start(text: &str, at: usize) -> Option<(String, usize)> {
    let rest = text[at..].strip_prefix('-').unwrap_or(&text[at..]);
    let start = text.len() - rest.len();
    let len = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(rest.len());
    if len == 0 || !rest[len..].starts_with(['\n', '\r']) {
        return None;
    }
    let newline = start + len + rest[len..].find('\n')?;
    Some((rest[..len].to_string(), newline))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_configurations_pass() {
        let text = "a = [\"[[[[\", { b = \"${x}\" }] # ((((\n/* [[[ */ c = <<EOT\n  ${[[1]]} ((( \nEOT\nd = a-b\n";
        assert_eq!(check(text), Ok(()));
    }

    #[test]
    fn deep_nesting_and_operator_chains_are_refused() {
        let deep = format!("a = {}", "[".repeat(10_000));
        let (message, at) = check(&deep).unwrap_err();
        assert_eq!(message, "nested more than 100 levels deep");
        assert_eq!(at, 4 + 100);
        let interpolations = format!("a = {}", "\"${".repeat(1000));
        assert!(check(&interpolations).is_err());
        let chain = format!("a = 1{}", " + 1".repeat(5000));
        assert!(check(&chain).unwrap_err().0.contains("operators"));
        // The count is per attribute, in blocks and objects too.
        let many = "a = 1 + 1\n".repeat(5000);
        assert_eq!(check(&many), Ok(()));
        let block = format!("locals {{\n{}}}\n", "  a = 1 + 1\n".repeat(5000));
        assert_eq!(check(&block), Ok(()));
        let object = format!("a = {{\n{}}}\n", "  a = 1 + 1\n".repeat(5000));
        assert_eq!(check(&object), Ok(()));
        // But not inside brackets, where an expression may span lines.
        let spanning = format!("a = (1{})\n", "\n + 1".repeat(5000));
        assert!(check(&spanning).is_err());
    }
}
