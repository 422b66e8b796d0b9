//! Modules: a `module "name" { source = "./modules/web-fleet" ... }` block loads the
//! `*.hcl` files of a local directory as a unit of its own, whose variables are the
//! block's arguments and whose outputs are `module.name.OUTPUT` in the caller.
//!
//! Loading happens in two passes. [`discover`] reads and parses every unit reachable from
//! the root once, before anything is evaluated, so that every syntax error is found and
//! the syntax trees outlive all evaluation. [`instantiate`] then evaluates a unit for one
//! call, with that call's arguments; a unit used by two calls is evaluated twice.

use super::diagnostic::{Diagnostic, Diagnostics};
use super::eval::{span_of, Call, Evaluator, ModuleValue};
use super::files::{normalize, Files, MAX_FILE_BYTES};
use super::source::{FileId, Sources, Span};
use super::variables::{Argument, Supplied};
use hcl_edit::expr::Expression;
use hcl_edit::structure::{Body, Structure};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Modules calling modules deeper than this are surely a mistake, and each level costs
/// stack while evaluating.
const MAX_MODULE_DEPTH: usize = 16;

/// The files of one directory: the root configuration or a module.
pub struct Unit {
    /// Relative to the configuration directory ("" for the root).
    pub dir: PathBuf,
    pub files: Vec<(FileId, Body)>,
    /// The unit each `module` block loads, by call name; `None` when loading failed.
    pub calls: HashMap<String, Option<usize>>,
}

/// Loads the root directory and every module it reaches. The root is unit 0.
pub fn discover(files: &dyn Files, sources: &mut Sources, diags: &mut Diagnostics) -> Vec<Unit> {
    let mut units = Vec::new();
    let paths = files.hcl_files(Path::new("")).unwrap_or_default();
    let parsed = parse_files(files, sources, diags, &paths);
    units.push(Unit {
        dir: PathBuf::new(),
        files: parsed,
        calls: HashMap::new(),
    });
    let mut stack = vec![PathBuf::new()];
    discover_calls(files, sources, diags, &mut units, 0, &mut stack);
    units
}

fn discover_calls(
    files: &dyn Files,
    sources: &mut Sources,
    diags: &mut Diagnostics,
    units: &mut Vec<Unit>,
    index: usize,
    stack: &mut Vec<PathBuf>,
) {
    let mut wanted = Vec::new();
    for (file, body) in &units[index].files {
        for structure in body.iter() {
            let Structure::Block(block) = structure else {
                continue;
            };
            if block.ident.as_str() != "module" || block.labels.len() != 1 {
                continue;
            }
            let name = block.labels[0].as_str().to_string();
            let source = match block.body.get_attribute("source") {
                None => {
                    diags.push(
                        Diagnostic::new(
                            format!("missing required attribute `source` in module \"{name}\""),
                            span_of(*file, &block.ident),
                        )
                        .with_hint("add `source = \"./modules/NAME\"`, the module's directory"),
                    );
                    None
                }
                Some(attr) => local_source(*file, &attr.value, diags),
            };
            wanted.push((name, source));
        }
    }
    let dir = units[index].dir.clone();
    let mut calls = HashMap::new();
    for (name, source) in wanted {
        let unit = source.and_then(|(path, span)| {
            let target = normalize(&dir.join(&path));
            if stack.contains(&target) {
                diags.push(
                    Diagnostic::new(
                        format!(
                            "module \"{name}\" includes itself: {path} is already being loaded"
                        ),
                        span,
                    )
                    .with_hint("a module cannot call itself, directly or through other modules"),
                );
                return None;
            }
            if let Some(known) = units.iter().position(|u| u.dir == target) {
                return Some(known);
            }
            if stack.len() >= MAX_MODULE_DEPTH {
                diags.error(
                    format!("modules are nested more than {MAX_MODULE_DEPTH} levels deep"),
                    span,
                );
                return None;
            }
            let paths = match files.hcl_files(&target) {
                Ok(paths) if paths.is_empty() => {
                    diags.push(
                        Diagnostic::new(
                            format!("module source \"{path}\" has no *.hcl files"),
                            span,
                        )
                        .with_hint("a module is a directory of .hcl files"),
                    );
                    return None;
                }
                Ok(paths) => paths,
                Err(e) => {
                    diags.push(
                        Diagnostic::new(format!("module source \"{path}\" {e}"), span).with_hint(
                            if dir.as_os_str().is_empty() {
                                "the path is relative to the configuration directory".to_string()
                            } else {
                                format!(
                                    "the path is relative to the module's directory, {}",
                                    dir.display()
                                )
                            },
                        ),
                    );
                    return None;
                }
            };
            let parsed = parse_files(files, sources, diags, &paths);
            units.push(Unit {
                dir: target.clone(),
                files: parsed,
                calls: HashMap::new(),
            });
            let child = units.len() - 1;
            stack.push(target);
            discover_calls(files, sources, diags, units, child, stack);
            stack.pop();
            Some(child)
        });
        calls.entry(name).or_insert(unit);
    }
    units[index].calls = calls;
}

/// A module source must be a literal local path, as in Terraform: it is resolved before
/// anything is evaluated.
fn local_source(
    file: FileId,
    expr: &Expression,
    diags: &mut Diagnostics,
) -> Option<(String, Option<Span>)> {
    let span = span_of(file, expr);
    let Expression::String(text) = expr else {
        diags.push(
            Diagnostic::new("module `source` must be a literal path", span).with_hint(
                "write the directory as a plain string, such as \"./modules/web-fleet\"",
            ),
        );
        return None;
    };
    let path = text.value().to_string();
    if !(path.starts_with("./") || path.starts_with("../")) {
        diags.push(
            Diagnostic::new(format!("unsupported module source \"{path}\""), span)
                .with_hint("only local directories are supported; start the path with ./ or ../"),
        );
        return None;
    }
    Some((path, span))
}

/// Reads, checks and parses files; problems are reported and the file left out.
pub fn parse_files(
    files: &dyn Files,
    sources: &mut Sources,
    diags: &mut Diagnostics,
    paths: &[PathBuf],
) -> Vec<(FileId, Body)> {
    let mut bodies = Vec::new();
    for path in paths {
        let bytes = match files.read(path, MAX_FILE_BYTES) {
            Ok(bytes) => bytes,
            Err(e) => {
                diags.error(format!("cannot read {}: {e}", path.display()), None);
                continue;
            }
        };
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let offset = e.utf8_error().valid_up_to();
                // Kept lossily so the message can show where the bad byte is.
                let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
                let file = sources.add(path.clone(), text);
                diags.push(
                    Diagnostic::new(
                        format!("{} is not valid UTF-8 text", path.display()),
                        Some(Span {
                            file,
                            range: offset..offset + 1,
                        }),
                    )
                    .with_hint("configuration files are UTF-8 text; is this a binary file?"),
                );
                continue;
            }
        };
        let file = sources.add(path.clone(), text);
        let text = sources.text(file);
        if let Err((message, offset)) = super::guard::check(text) {
            diags.push(
                Diagnostic::new(
                    message,
                    Some(Span {
                        file,
                        range: offset..offset + 1,
                    }),
                )
                .with_hint("configurations nest a few levels; this looks generated or corrupted"),
            );
            continue;
        }
        match hcl_edit::parser::parse_body(text) {
            Ok(body) => bodies.push((file, body)),
            Err(e) => {
                let offset = e.location().offset();
                diags.push(Diagnostic::new(
                    format!("syntax error: {}", e.message()),
                    Some(Span {
                        file,
                        range: offset..offset + 1,
                    }),
                ));
            }
        }
    }
    bodies
}

/// Evaluates the unit `call` loads, with the arguments of the call evaluated in `parent`.
pub fn instantiate(parent: &Evaluator, name: &str, call: &Call) -> Option<ModuleValue> {
    let program = parent.program;
    let mut arguments = Vec::new();
    for structure in call.block.body.iter() {
        match structure {
            Structure::Attribute(a) if a.key.as_str() == "source" => {}
            Structure::Attribute(a) => {
                let (value, trace) = parent.eval_traced(call.file, &a.value);
                let value = match value {
                    Ok(v) => Some(v),
                    Err(Some(d)) => {
                        program.diags.borrow_mut().push(d);
                        None
                    }
                    Err(None) => None,
                };
                arguments.push(Argument {
                    name: a.key.as_str().to_string(),
                    key_span: span_of(call.file, &a.key),
                    value,
                    span: span_of(call.file, &a.value),
                    given: parent.given_by(&trace.vars),
                });
            }
            Structure::Block(b) => program.diags.borrow_mut().push(
                Diagnostic::new(
                    format!(
                        "unexpected block `{}` in module \"{name}\"",
                        b.ident.as_str()
                    ),
                    span_of(call.file, &b.ident),
                )
                .with_hint(
                    "a module block holds `source` and the module's variables as attributes",
                ),
            ),
        }
    }
    let unit = call.unit?;
    let mut path = parent.module_path.clone();
    path.push(name.to_string());
    let supplied = Supplied::Module {
        name: name.to_string(),
        span: span_of(call.file, &call.block.labels[0]),
        arguments,
    };
    super::load::read_unit(program, unit, path, &supplied).map(|unit| unit.value)
}
