//! Variables: their declared types, values from the command line, files, the environment
//! and defaults (Terraform's precedence), or from a module call's arguments.

use super::diagnostic::{did_you_mean, Diagnostic, Diagnostics};
use super::eval::{span_of, type_name, Evaluator};
use super::functions::parse_number;
use super::load::{Mode, Program, VarInputs};
use super::source::{FileId, Span};
use hcl::{Map, Value};
use hcl_edit::structure::Block;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub enum VarType {
    String,
    Number,
    Bool,
    List(Box<VarType>),
    Map(Box<VarType>),
    Any,
}

impl VarType {
    pub fn name(&self) -> String {
        match self {
            VarType::String => "string".into(),
            VarType::Number => "number".into(),
            VarType::Bool => "bool".into(),
            VarType::List(t) => format!("list({})", t.name()),
            VarType::Map(t) => format!("map({})", t.name()),
            VarType::Any => "any".into(),
        }
    }

    /// Converts the way Terraform does: numbers and bools become strings where a string
    /// is wanted, and strings that look like numbers or bools convert the other way.
    pub fn convert(&self, value: Value) -> Result<Value, String> {
        let mismatch = |v: &Value| format!("expected {}, found {}", self.name(), type_name(v));
        match (self, value) {
            (VarType::Any, v) => Ok(v),
            // Any variable may be null, which means "not set" where it is used.
            (_, Value::Null) => Ok(Value::Null),
            (VarType::String, Value::String(s)) => Ok(Value::String(s)),
            (VarType::String, v @ (Value::Number(_) | Value::Bool(_))) => {
                Ok(Value::String(super::eval::to_template_string(&v)?))
            }
            (VarType::Number, Value::Number(n)) => Ok(Value::Number(n)),
            (VarType::Number, Value::String(s)) => parse_number(&s)
                .map(Value::Number)
                .ok_or_else(|| format!("expected a number, found \"{s}\"")),
            (VarType::Bool, Value::Bool(b)) => Ok(Value::Bool(b)),
            (VarType::Bool, Value::String(s)) if s == "true" || s == "false" => {
                Ok(Value::Bool(s == "true"))
            }
            (VarType::List(t), Value::Array(items)) => items
                .into_iter()
                .map(|i| t.convert(i))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            (VarType::Map(t), Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| Ok((k, t.convert(v)?)))
                .collect::<Result<_, String>>()
                .map(Value::Object),
            (_, v) => Err(mismatch(&v)),
        }
    }
}

pub fn parse_type(expr: &hcl_edit::expr::Expression) -> Option<VarType> {
    use hcl_edit::expr::Expression as E;
    match expr {
        E::Variable(v) => match v.as_str() {
            "string" => Some(VarType::String),
            "number" => Some(VarType::Number),
            "bool" => Some(VarType::Bool),
            "any" => Some(VarType::Any),
            "list" => Some(VarType::List(Box::new(VarType::Any))),
            "map" => Some(VarType::Map(Box::new(VarType::Any))),
            _ => None,
        },
        E::FuncCall(call) if call.args.len() == 1 => {
            let inner = Box::new(parse_type(call.args.get(0)?)?);
            match call.name.name.as_str() {
                "list" | "set" => Some(VarType::List(inner)),
                "map" => Some(VarType::Map(inner)),
                _ => None,
            }
        }
        _ => None,
    }
}

pub struct Declared<'a> {
    pub name: String,
    pub file: FileId,
    pub block: &'a Block,
    pub ty: VarType,
}

/// One argument of a module call, evaluated in the caller.
pub struct Argument {
    pub name: String,
    pub key_span: Option<Span>,
    /// `None` when the value is unknown or its problem is already reported.
    pub value: Option<Value>,
    pub span: Option<Span>,
    /// Where the value came from outside the configuration (`--var release`).
    pub given: Vec<String>,
}

/// Where a unit's variables get their values.
pub enum Supplied<'s> {
    Root(&'s VarInputs),
    Module {
        name: String,
        /// The call's label, where a missing argument is reported.
        span: Option<Span>,
        arguments: Vec<Argument>,
    },
}

/// Where a value came from, for messages about it (a failed `validation`).
pub struct Origin {
    pub what: String,
    pub span: Option<Span>,
}

pub struct Resolved {
    pub values: Map<String, Value>,
    pub origins: HashMap<String, Origin>,
    /// Where each value came from outside the configuration, for messages about what
    /// uses it: `--var release`; nothing for defaults.
    pub given: HashMap<String, Vec<String>>,
}

pub fn resolve(
    program: &Program,
    declared: &[Declared],
    supplied: &Supplied,
    diags: &mut Diagnostics,
) -> Resolved {
    let mut resolved = Resolved {
        values: Map::new(),
        origins: HashMap::new(),
        given: HashMap::new(),
    };
    let find = |name: &str| declared.iter().find(|d| d.name == name);
    let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
    // A variable file that cannot be read may hold any value: its variables are not
    // also reported as missing.
    let mut unreadable_file = false;
    match supplied {
        Supplied::Root(inputs) => {
            let (values, failed) = root_values(inputs, diags);
            unreadable_file = failed;
            for (name, value, origin) in values {
                let Some(decl) = find(&name) else {
                    // As Terraform: environment values and variable files may carry
                    // values for other configurations; a --var for an undeclared name is
                    // most likely a typo.
                    if origin == "--var" {
                        let d = Diagnostic::new(
                            format!("value given for undeclared variable `{name}`"),
                            None,
                        );
                        diags.push(match did_you_mean(&name, &names) {
                            Some(n) => d.with_hint(format!("did you mean `{n}`?")),
                            None => {
                                d.with_hint(format!("declare it with `variable \"{name}\" {{}}`"))
                            }
                        });
                    }
                    continue;
                };
                let value = match value {
                    RawValue::Parsed(v) => v,
                    // A string variable takes the text as it is; other types parse it as HCL.
                    RawValue::Text(text) if matches!(decl.ty, VarType::String | VarType::Any) => {
                        Value::String(text)
                    }
                    RawValue::Text(text) => match parse_value(&text) {
                        Some(v) => v,
                        None => {
                            diags.error(
                                format!(
                                    "{origin} value for `{name}` is not a valid {}: {text}",
                                    decl.ty.name()
                                ),
                                None,
                            );
                            continue;
                        }
                    },
                };
                match decl.ty.convert(value) {
                    Ok(v) => {
                        resolved.values.insert(name.clone(), v);
                        resolved
                            .given
                            .insert(name.clone(), vec![given_as(&name, &origin)]);
                        resolved.origins.insert(
                            name,
                            Origin {
                                what: origin,
                                span: None,
                            },
                        );
                    }
                    Err(message) => {
                        diags.error(
                            format!("invalid value for variable `{name}` from {origin}: {message}"),
                            None,
                        );
                        // Reported: not also "no value for required variable".
                        resolved.origins.insert(
                            name,
                            Origin {
                                what: origin,
                                span: None,
                            },
                        );
                    }
                }
            }
        }
        Supplied::Module {
            name: module,
            arguments,
            ..
        } => {
            for argument in arguments {
                let Some(decl) = find(&argument.name) else {
                    let d = Diagnostic::new(
                        format!("module `{module}` has no variable `{}`", argument.name),
                        argument.key_span.clone(),
                    );
                    diags.push(match did_you_mean(&argument.name, &names) {
                        Some(n) => d.with_hint(format!("did you mean `{n}`?")),
                        None if names.is_empty() => d.with_hint("the module declares no variables"),
                        None => {
                            d.with_hint(format!("the module's variables are: {}", names.join(", ")))
                        }
                    });
                    continue;
                };
                let Some(value) = argument.value.clone() else {
                    // Unknown: declared, so uses are silent.
                    resolved
                        .origins
                        .insert(decl.name.clone(), origin_of(argument));
                    continue;
                };
                match decl.ty.convert(value) {
                    Ok(v) => {
                        resolved.values.insert(decl.name.clone(), v);
                        resolved
                            .given
                            .insert(decl.name.clone(), argument.given.clone());
                        resolved
                            .origins
                            .insert(decl.name.clone(), origin_of(argument));
                    }
                    Err(message) => diags.error(
                        format!(
                            "invalid value for variable `{}` of module `{module}`: {message}",
                            decl.name
                        ),
                        argument.span.clone(),
                    ),
                }
            }
        }
    }

    for decl in declared {
        let name = &decl.name;
        if resolved.origins.contains_key(name) || resolved.values.contains_key(name) {
            continue;
        }
        match decl.block.body.get_attribute("default") {
            Some(attr) => {
                // A default is a constant: it cannot use variables or locals.
                let constants = Evaluator::new(program, Path::new(""), Vec::new(), Map::new());
                match constants.eval(decl.file, &attr.value) {
                    Ok(v) => match decl.ty.convert(v) {
                        Ok(v) => {
                            resolved.values.insert(name.clone(), v);
                            resolved.origins.insert(
                                name.clone(),
                                Origin {
                                    what: "its default".into(),
                                    span: span_of(decl.file, &attr.value),
                                },
                            );
                        }
                        Err(message) => diags.error(
                            format!("default of variable `{name}` has the wrong type: {message}"),
                            span_of(decl.file, &attr.value),
                        ),
                    },
                    Err(Some(d)) => diags.push(d),
                    Err(None) => {}
                }
            }
            None => match supplied {
                Supplied::Module {
                    name: module, span, ..
                } => diags.push(
                    Diagnostic::new(
                        format!("module `{module}` needs a value for variable `{name}`"),
                        span.clone(),
                    )
                    .with_hint(format!("add `{name} = ...` to the module block")),
                ),
                // `validate` checks the configuration, not one set of values: as in
                // Terraform, a required variable without a value is an error only when
                // planning.
                Supplied::Root(_) if program.mode != Mode::Plan || unreadable_file => {}
                Supplied::Root(_) => diags.push(
                    Diagnostic::new(
                        format!("no value for required variable `{name}`"),
                        span_of(decl.file, &decl.block.labels[0]),
                    )
                    .with_hint(format!(
                        "pass --var {name}=VALUE, set IMMUNE_VAR_{name}, or give it a default"
                    )),
                ),
            },
        }
    }
    resolved
}

/// How a message names the source of a root variable's value: `--var release`.
fn given_as(name: &str, origin: &str) -> String {
    match origin {
        "--var" => format!("--var {name}"),
        // `environment variable IMMUNE_VAR_release` names the variable already.
        _ if origin.starts_with("environment variable") => origin.to_string(),
        _ => format!("{origin} (variable `{name}`)"),
    }
}

fn origin_of(argument: &Argument) -> Origin {
    Origin {
        what: "the module call".into(),
        span: argument.span.clone(),
    }
}

enum RawValue {
    Text(String),
    Parsed(Value),
}

/// The root's values in order of precedence, lowest first (as Terraform's: environment <
/// variable files < --var; defaults apply only where none is given).
/// Also says whether a variable file could not be read.
fn root_values(
    inputs: &VarInputs,
    diags: &mut Diagnostics,
) -> (Vec<(String, RawValue, String)>, bool) {
    let mut raw = Vec::new();
    let mut failed = false;
    for (name, value) in &inputs.saved {
        raw.push((
            name.clone(),
            RawValue::Parsed(value.clone()),
            "the saved plan".to_string(),
        ));
    }
    for (name, value) in &inputs.env {
        raw.push((
            name.clone(),
            RawValue::Text(value.clone()),
            format!("environment variable IMMUNE_VAR_{name}"),
        ));
    }
    for path in &inputs.files {
        match read_var_file(path) {
            Ok(values) => raw.extend(values.into_iter().map(|(k, v)| {
                (
                    k,
                    RawValue::Parsed(v),
                    format!("variable file {}", path.display()),
                )
            })),
            Err(message) => {
                failed = true;
                diags.error(message, None)
            }
        }
    }
    for (name, value) in &inputs.cli {
        raw.push((name.clone(), RawValue::Text(value.clone()), "--var".into()));
    }
    (raw, failed)
}

fn parse_value(text: &str) -> Option<Value> {
    let text = format!("v = {text}");
    super::guard::check(&text).ok()?;
    match hcl::from_str::<Value>(&text) {
        Ok(Value::Object(mut o)) => o.swap_remove("v"),
        _ => None,
    }
}

fn read_var_file(path: &Path) -> Result<Vec<(String, Value)>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read variable file {}: {e}", path.display()))?;
    if bytes.len() > super::files::MAX_FILE_BYTES {
        return Err(format!("variable file {} is too large", path.display()));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("variable file {} is not valid UTF-8 text", path.display()))?;
    if let Err((message, _)) = super::guard::check(&text) {
        return Err(format!("variable file {}: {message}", path.display()));
    }
    // As Terraform's: `*.json` files hold one JSON object of values.
    if path.extension().is_some_and(|x| x == "json") {
        return match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| {
                    let value = hcl::to_value(&v).map_err(|e| {
                        format!("variable file {}: value of `{k}`: {e}", path.display())
                    })?;
                    Ok((k, value))
                })
                .collect(),
            Ok(_) => Err(format!(
                "variable file {} must hold one JSON object, such as {{\"release\": \"v2\"}}",
                path.display()
            )),
            Err(e) => Err(format!(
                "variable file {} is not valid JSON: {e}",
                path.display()
            )),
        };
    }
    match hcl::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map.into_iter().collect()),
        Ok(_) => Err(format!(
            "variable file {} must hold `name = value` lines",
            path.display()
        )),
        Err(e) => Err(format!(
            "variable file {} is not valid HCL: {e}\n  write `name = value` lines, or name the file *.json for JSON",
            path.display()
        )),
    }
}

/// Checks a variable's `validation` blocks against its value.
pub fn validate(r: &mut super::reader::BlockReader, name: &str, origin: Option<&Origin>) {
    for block in r.blocks("validation") {
        let mut vr = r.nested(block, "validation".into());
        let present = vr.has("condition");
        let condition = vr.value("condition");
        let mut message = vr.required_string("error_message");
        // A message that shows a sensitive value would print it into every log.
        let shows_secret = block
            .body
            .get_attribute("error_message")
            .is_some_and(|a| vr.eval.eval_tracked(vr.file, &a.value).1);
        if shows_secret {
            message = "(the error message shows a sensitive value, so it is not printed)".into();
        }
        if !present {
            vr.missing("condition");
        }
        let Some((value, span)) = condition else {
            vr.finish();
            continue;
        };
        match value {
            Value::Bool(true) => {}
            Value::Bool(false) => {
                let at = origin.and_then(|o| o.span.clone()).or(span);
                let mut d = Diagnostic::new(
                    format!("invalid value for variable `{name}`: {message}"),
                    at,
                );
                if let Some(origin) = origin {
                    d = d.with_hint(format!(
                        "the value comes from {}; the variable's validation condition rejects it",
                        origin.what
                    ));
                }
                vr.diags.push(d);
            }
            other => vr.diags.error(
                format!(
                    "validation condition must be a bool, found {}",
                    type_name(&other)
                ),
                span,
            ),
        }
        vr.finish();
    }
}
