//! Reads one block's body into typed values. Every getter returns a usable value even
//! when the input is wrong, recording the problem instead, so one pass finds every error.

use super::diagnostic::{did_you_mean, Diagnostic, Diagnostics};
use super::eval::{span_of, type_name, Evaluator, Trace};
use super::model::{parse_duration, Place};
use super::source::{FileId, Span};
use hcl::Value;
use hcl_edit::structure::{Block, Body, Structure};
use std::time::Duration;

pub struct BlockReader<'r, 'a> {
    pub eval: &'r Evaluator<'a>,
    pub diags: &'r mut Diagnostics,
    pub file: FileId,
    body: &'a Body,
    /// How messages name this block, e.g. `fleet "web"` or `image`.
    pub what: String,
    /// Where "missing attribute" errors point: the block's header.
    pub span: Option<Span>,
    known_attributes: Vec<&'static str>,
    known_blocks: Vec<&'static str>,
    /// Attributes set to `null`: as in Terraform, that is the same as leaving them out.
    nulls: Vec<&'static str>,
    missing: Vec<String>,
    /// What each attribute's evaluation read, for [`BlockReader::place`].
    traces: Vec<(&'static str, Trace)>,
}

impl<'r, 'a> BlockReader<'r, 'a> {
    pub fn new(
        eval: &'r Evaluator<'a>,
        diags: &'r mut Diagnostics,
        file: FileId,
        block: &'a Block,
        what: String,
    ) -> Self {
        BlockReader {
            eval,
            diags,
            file,
            body: &block.body,
            what,
            span: span_of(file, &block.ident),
            known_attributes: Vec::new(),
            known_blocks: Vec::new(),
            nulls: Vec::new(),
            missing: Vec::new(),
            traces: Vec::new(),
        }
    }

    /// A reader for a nested block, sharing the diagnostics.
    pub fn nested<'s>(&'s mut self, block: &'a Block, what: String) -> BlockReader<'s, 'a> {
        BlockReader::new(self.eval, self.diags, self.file, block, what)
    }

    /// Where the attribute's value is written, or the block's header when it is absent.
    pub fn body_span(&self, key: &str) -> Option<Span> {
        self.body
            .get_attribute(key)
            .and_then(|a| span_of(self.file, &a.value))
            .or_else(|| self.span.clone())
    }

    /// Where the attribute's value is written and where it came from, once read (the
    /// block's header when it is absent).
    pub fn place(&self, key: &str) -> Place {
        let Some(attr) = self.body.get_attribute(key) else {
            return Place {
                span: self.span.clone(),
                ..Place::default()
            };
        };
        let trace = self
            .traces
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, t)| t.clone())
            .unwrap_or_default();
        Place {
            span: span_of(self.file, &attr.value),
            given: self.eval.given_by(&trace.vars),
            sensitive: trace.sensitive,
        }
    }

    /// Whether the attribute is written out as a plain string, and whether its value
    /// reads anything sensitive; `None` when it is absent.
    pub fn provenance(&self, key: &str) -> Option<(bool, bool)> {
        let attr = self.body.get_attribute(key)?;
        let literal = matches!(attr.value, hcl_edit::expr::Expression::String(_));
        let (_, sensitive) = self.eval.eval_tracked(self.file, &attr.value);
        Some((literal, sensitive))
    }

    /// The attribute's expression as written, unevaluated, and where it is.
    pub fn expression(
        &mut self,
        key: &'static str,
    ) -> Option<(&'a hcl_edit::expr::Expression, Option<Span>)> {
        self.known_attributes.push(key);
        let attr = self.body.get_attribute(key)?;
        Some((&attr.value, span_of(self.file, &attr.value)))
    }

    pub fn has(&mut self, key: &'static str) -> bool {
        self.known_attributes.push(key);
        self.body.get_attribute(key).is_some()
    }

    /// The evaluated value and its span; `None` when absent or when evaluation failed
    /// (the failure is already recorded).
    pub fn value(&mut self, key: &'static str) -> Option<(Value, Option<Span>)> {
        self.known_attributes.push(key);
        let attr = self.body.get_attribute(key)?;
        let span = span_of(self.file, &attr.value);
        let (result, trace) = self.eval.eval_traced(self.file, &attr.value);
        self.traces.push((key, trace));
        match result {
            Ok(Value::Null) => {
                self.nulls.push(key);
                None
            }
            Ok(v) => Some((v, span)),
            Err(Some(d)) => {
                self.diags.push(d);
                None
            }
            Err(None) => None,
        }
    }

    /// Reported by `finish`, which leaves it out when a misspelt attribute is the
    /// missing one: one mistake, one error.
    pub fn missing(&mut self, key: &str) {
        self.missing.push(key.to_string());
    }

    fn required(&mut self, key: &'static str) -> Option<(Value, Option<Span>)> {
        let present = self.body.get_attribute(key).is_some();
        let value = self.value(key);
        if !present || self.nulls.contains(&key) {
            self.missing(key);
        }
        value
    }

    pub fn wrong_type(&mut self, key: &str, expected: &str, found: &Value, span: Option<Span>) {
        self.diags.error(
            format!(
                "attribute `{key}` must be {expected}, found {}",
                type_name(found)
            ),
            span,
        );
    }

    pub fn string(&mut self, key: &'static str) -> Option<String> {
        let (value, span) = self.value(key)?;
        self.as_string(key, value, span)
    }

    pub fn required_string(&mut self, key: &'static str) -> String {
        self.required(key)
            .and_then(|(v, span)| self.as_string(key, v, span))
            .unwrap_or_default()
    }

    fn as_string(&mut self, key: &str, value: Value, span: Option<Span>) -> Option<String> {
        match value {
            Value::String(s) if s.is_empty() => {
                self.diags
                    .error(format!("attribute `{key}` must not be empty"), span);
                None
            }
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            other => {
                self.wrong_type(key, "a string", &other, span);
                None
            }
        }
    }

    pub fn strings(&mut self, key: &'static str) -> Vec<String> {
        let Some((value, span)) = self.required(key) else {
            return Vec::new();
        };
        match value {
            Value::Array(items) if items.iter().all(|i| matches!(i, Value::String(_))) => items
                .into_iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .collect(),
            other => {
                self.wrong_type(key, "a list of strings", &other, span);
                Vec::new()
            }
        }
    }

    /// A whole number within `range`, or `default` when absent.
    pub fn number(
        &mut self,
        key: &'static str,
        range: std::ops::RangeInclusive<u64>,
        default: Option<u64>,
    ) -> u64 {
        let value = if default.is_some() {
            self.value(key)
        } else {
            self.required(key)
        };
        let fallback = default.unwrap_or(*range.start());
        let Some((value, span)) = value else {
            return fallback;
        };
        self.whole_in(key, &value, span, range).unwrap_or(fallback)
    }

    /// `value` as a whole number within `range`, or the problem reported.
    fn whole_in(
        &mut self,
        key: &str,
        value: &Value,
        span: Option<Span>,
        range: std::ops::RangeInclusive<u64>,
    ) -> Option<u64> {
        match value.as_u64() {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                self.diags.error(
                    format!(
                        "attribute `{key}` must be a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                    span,
                );
                None
            }
        }
    }

    /// One of `options`, or `default` when absent; anything else is reported with the
    /// closest option.
    pub fn choice(
        &mut self,
        key: &'static str,
        options: &[&'static str],
        default: &'static str,
    ) -> &'static str {
        let Some((value, span)) = self.value(key) else {
            return default;
        };
        let text = match &value {
            Value::String(s) => s.as_str(),
            other => {
                self.wrong_type(key, &format!("one of {}", quoted(options)), other, span);
                return default;
            }
        };
        if let Some(found) = options.iter().find(|o| **o == text) {
            return found;
        }
        let d = Diagnostic::new(format!("unknown {key} \"{text}\""), span);
        self.diags.push(match did_you_mean(text, options) {
            Some(o) => d.with_hint(format!(
                "did you mean \"{o}\"? {key} is one of {}",
                quoted(options)
            )),
            None => d.with_hint(format!("{key} is one of {}", quoted(options))),
        });
        default
    }

    pub fn boolean(&mut self, key: &'static str) -> Option<bool> {
        let (value, span) = self.value(key)?;
        match value {
            Value::Bool(b) => Some(b),
            other => {
                self.wrong_type(key, "a bool", &other, span);
                None
            }
        }
    }

    /// A whole number within `range`; `None` when absent (reported if `required`) or
    /// not known, so that checks between numbers skip what is unknown.
    pub fn try_number(
        &mut self,
        key: &'static str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Option<u64> {
        let (value, span) = self.required(key)?;
        self.whole_in(key, &value, span, range)
    }

    /// A number, whole or not.
    pub fn float(&mut self, key: &'static str) -> Option<f64> {
        let (value, span) = self.required(key)?;
        match value.as_f64() {
            Some(n) if n.is_finite() => Some(n),
            _ => {
                self.wrong_type(key, "a number", &value, span);
                None
            }
        }
    }

    /// A map of strings, `{}` when absent.
    pub fn string_map(&mut self, key: &'static str) -> std::collections::BTreeMap<String, String> {
        let Some((value, span)) = self.value(key) else {
            return Default::default();
        };
        match value {
            Value::Object(map) if map.values().all(|v| matches!(v, Value::String(_))) => map
                .into_iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k, s)),
                    _ => None,
                })
                .collect(),
            other => {
                self.wrong_type(key, "a map of strings", &other, span);
                Default::default()
            }
        }
    }

    /// A list of strings, `None` when absent.
    pub fn optional_strings(&mut self, key: &'static str) -> Option<Vec<String>> {
        if self.body.get_attribute(key).is_none() {
            self.known_attributes.push(key);
            return None;
        }
        Some(self.strings(key))
    }

    /// Tags for AWS resources: a map of strings whose keys immune does not set itself.
    /// What AWS accepts depends on the resources they go to: see `config::names`.
    pub fn tags(&mut self, key: &'static str) -> std::collections::BTreeMap<String, String> {
        let span = self
            .body
            .get_attribute(key)
            .and_then(|a| span_of(self.file, &a.value));
        let tags = self.string_map(key);
        for k in tags.keys() {
            if k.starts_with("immune:") || k == "Name" {
                self.diags.push(
                    Diagnostic::new(
                        format!(
                            "tag `{k}` is set by immune itself (it names and owns what it creates)"
                        ),
                        span.clone(),
                    )
                    .with_hint("remove the tag or give it another key"),
                );
            }
        }
        // Immune's own tags (five of them) count against AWS's 50 per resource.
        if tags.len() > 40 {
            self.diags.error(
                format!(
                    "{} tags given; at most 40 fit beside immune's own",
                    tags.len()
                ),
                span,
            );
        }
        tags
    }

    pub fn duration(&mut self, key: &'static str, default: Duration) -> Duration {
        let Some((value, span)) = self.value(key) else {
            return default;
        };
        match value {
            Value::String(s) => parse_duration(&s).unwrap_or_else(|message| {
                self.diags.error(message, span);
                default
            }),
            other => {
                self.wrong_type(key, "a duration such as \"90s\"", &other, span);
                default
            }
        }
    }

    /// Every nested block named `name`.
    pub fn blocks(&mut self, name: &'static str) -> Vec<&'a Block> {
        self.known_blocks.push(name);
        self.body.get_blocks(name).collect()
    }

    /// At most one nested block named `name`.
    pub fn block(&mut self, name: &'static str) -> Option<&'a Block> {
        let mut blocks = self.blocks(name).into_iter();
        let first = blocks.next();
        for extra in blocks {
            self.diags.error(
                format!(
                    "duplicate `{name}` block in {}; only one is allowed",
                    self.what
                ),
                span_of(self.file, &extra.ident),
            );
        }
        first
    }

    pub fn required_block(&mut self, name: &'static str) -> Option<&'a Block> {
        let block = self.block(name);
        if block.is_none() {
            self.diags.push(
                Diagnostic::new(
                    format!("missing required block `{name}` in {}", self.what),
                    self.span.clone(),
                )
                .with_hint(format!("add `{name} {{ ... }}` to the {} block", self.what)),
            );
        }
        block
    }

    /// Reports every attribute and block that no getter asked for.
    pub fn finish(mut self) {
        // An attribute read twice (`has`, then its value) is listed once in hints.
        let mut seen = Vec::new();
        self.known_attributes.retain(|k| {
            let new = !seen.contains(k);
            seen.push(*k);
            new
        });
        let mut misspelt = Vec::new();
        for structure in self.body.iter() {
            if let Structure::Attribute(a) = structure {
                if !self.known_attributes.contains(&a.key.as_str()) {
                    if let Some(k) = did_you_mean(a.key.as_str(), &self.known_attributes) {
                        misspelt.push(k);
                    }
                }
            }
        }
        for key in &self.missing {
            if misspelt.contains(&key.as_str()) {
                continue;
            }
            self.diags.push(
                Diagnostic::new(
                    format!("missing required attribute `{key}` in {}", self.what),
                    self.span.clone(),
                )
                .with_hint(format!("add `{key} = ...` to the {} block", self.what)),
            );
        }
        for structure in self.body.iter() {
            let (kind, name, span, known) = match structure {
                Structure::Attribute(a) => (
                    "attribute",
                    a.key.as_str(),
                    span_of(self.file, &a.key),
                    &self.known_attributes,
                ),
                Structure::Block(b) => (
                    "block",
                    b.ident.as_str(),
                    span_of(self.file, &b.ident),
                    &self.known_blocks,
                ),
            };
            if known.contains(&name) {
                continue;
            }
            let d = Diagnostic::new(format!("unknown {kind} `{name}` in {}", self.what), span);
            let d = match did_you_mean(name, known) {
                Some(k) => d.with_hint(format!("did you mean `{k}`?")),
                None if known.is_empty() => d,
                None => d.with_hint(format!("{} allows: {}", self.what, known.join(", "))),
            };
            self.diags.push(d);
        }
    }
}

fn quoted(options: &[&str]) -> String {
    options
        .iter()
        .map(|o| format!("\"{o}\""))
        .collect::<Vec<_>>()
        .join(", ")
}
