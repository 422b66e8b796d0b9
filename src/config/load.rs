//! Loads a configuration directory: every `*.hcl` file, variables from their sources,
//! locals, and the fleets as typed values. All problems are reported together.

use super::diagnostic::{did_you_mean, Diagnostic, Diagnostics};
use super::eval::{span_of, type_name, Evaluator};
use super::functions::parse_number;
use super::model::*;
use super::reader::BlockReader;
use super::source::{FileId, Sources, Span};
use hcl::{Map, Value};
use hcl_edit::structure::{Block, Body, Structure};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where variable values come from, besides the defaults in the configuration.
#[derive(Debug, Clone, Default)]
pub struct VarInputs {
    /// `--var NAME=VALUE`, in command-line order (later wins).
    pub cli: Vec<(String, String)>,
    /// `--var-file FILE`, in command-line order.
    pub files: Vec<PathBuf>,
    /// `IMMUNE_VAR_name` from the environment.
    pub env: Vec<(String, String)>,
}

impl VarInputs {
    pub fn from_env() -> Vec<(String, String)> {
        std::env::vars()
            .filter_map(|(k, v)| Some((k.strip_prefix("IMMUNE_VAR_")?.to_string(), v)))
            .collect()
    }
}

/// A configuration that failed to load, with everything needed to show why.
#[derive(Debug)]
pub struct ConfigError {
    pub sources: Sources,
    pub diagnostics: Diagnostics,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.diagnostics.render(&self.sources).trim_end())
    }
}

impl std::error::Error for ConfigError {}

const TOP_LEVEL: &[&str] = &["immune", "variable", "locals", "fleet", "output"];

#[derive(Debug, Clone, PartialEq)]
enum VarType {
    String,
    Number,
    Bool,
    List(Box<VarType>),
    Map(Box<VarType>),
    Any,
}

impl VarType {
    fn name(&self) -> String {
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
    fn convert(&self, value: Value) -> Result<Value, String> {
        let mismatch = |v: &Value| format!("expected {}, found {}", self.name(), type_name(v));
        match (self, value) {
            (VarType::Any, v) => Ok(v),
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

fn parse_type(expr: &hcl_edit::expr::Expression) -> Option<VarType> {
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

struct Declared<'a> {
    file: FileId,
    block: &'a Block,
    ty: VarType,
}

/// Loads the configuration in `dir`.
pub fn load(dir: &Path, inputs: &VarInputs) -> Result<Config, ConfigError> {
    let mut sources = Sources::default();
    let mut diags = Diagnostics::default();
    let mut bodies = Vec::new();

    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "hcl") && p.is_file())
            .collect(),
        Err(e) => {
            diags.push(Diagnostic::new(
                format!("cannot read configuration directory {}: {e}", dir.display()),
                None,
            ));
            return Err(ConfigError {
                sources,
                diagnostics: diags,
            });
        }
    };
    paths.sort();
    if paths.is_empty() {
        diags.push(
            Diagnostic::new(format!("no *.hcl files in {}", dir.display()), None).with_hint(
                "run immune in the directory of your configuration, or pass --chdir DIR",
            ),
        );
        return Err(ConfigError {
            sources,
            diagnostics: diags,
        });
    }
    for path in paths {
        let shown = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
        match read_source(&path) {
            Ok(text) => {
                let file = sources.add(shown, text);
                match hcl_edit::parser::parse_body(sources.text(file)) {
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
            Err(message) => diags.push(Diagnostic::new(
                format!("cannot read {}: {message}", shown.display()),
                None,
            )),
        }
    }

    let config = read_config(dir, &sources, &bodies, inputs, &mut diags);
    match config {
        Some(config) if diags.is_empty() => Ok(config),
        _ => Err(ConfigError {
            sources,
            diagnostics: diags,
        }),
    }
}

fn read_source(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "not valid UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

fn read_config(
    dir: &Path,
    sources: &Sources,
    bodies: &[(FileId, Body)],
    inputs: &VarInputs,
    diags: &mut Diagnostics,
) -> Option<Config> {
    // Pass 1: sort the top-level blocks by kind.
    let mut immune = Vec::new();
    let mut variables: Vec<(String, Declared)> = Vec::new();
    let mut locals = Vec::new();
    let mut fleets = Vec::new();
    for (file, body) in bodies {
        let file = *file;
        for structure in body.iter() {
            let block = match structure {
                Structure::Block(b) => b,
                Structure::Attribute(a) => {
                    diags.push(
                        Diagnostic::new(
                            format!("unexpected attribute `{}` at the top level", a.key.as_str()),
                            span_of(file, &a.key),
                        )
                        .with_hint("values at the top level go in a `locals { ... }` block"),
                    );
                    continue;
                }
            };
            let labels: Vec<&str> = block.labels.iter().map(|l| l.as_str()).collect();
            let kind = block.ident.as_str();
            let expected_labels = match kind {
                "immune" | "locals" => 0,
                "variable" | "fleet" | "output" => 1,
                _ => {
                    let d = Diagnostic::new(
                        format!("unknown block `{kind}`"),
                        span_of(file, &block.ident),
                    );
                    diags.push(match did_you_mean(kind, TOP_LEVEL) {
                        Some(k) => d.with_hint(format!("did you mean `{k}`?")),
                        None => d.with_hint(format!("the blocks are: {}", TOP_LEVEL.join(", "))),
                    });
                    continue;
                }
            };
            if labels.len() != expected_labels {
                diags.push(Diagnostic::new(
                    match expected_labels {
                        0 => format!("`{kind}` block takes no label"),
                        _ => {
                            format!("`{kind}` block needs one name, as in `{kind} \"name\" {{ }}`")
                        }
                    },
                    span_of(file, &block.ident),
                ));
                continue;
            }
            match kind {
                "immune" => immune.push((file, block)),
                "locals" => locals.push((file, block)),
                "fleet" => fleets.push((file, block, labels[0].to_string())),
                "output" => {} // outputs are read after apply; nothing to check yet
                _ => {
                    let name = labels[0].to_string();
                    if variables.iter().any(|(n, _)| *n == name) {
                        diags.error(
                            format!("variable `{name}` is declared twice"),
                            span_of(file, &block.labels[0]),
                        );
                        continue;
                    }
                    let ty = match block.body.get_attribute("type") {
                        None => VarType::Any,
                        Some(attr) => parse_type(&attr.value).unwrap_or_else(|| {
                            diags.push(
                                Diagnostic::new(
                                    "unknown variable type",
                                    span_of(file, &attr.value),
                                )
                                .with_hint(
                                    "use string, number, bool, list(TYPE), map(TYPE) or any",
                                ),
                            );
                            VarType::Any
                        }),
                    };
                    variables.push((name, Declared { file, block, ty }));
                }
            }
        }
    }

    let vars = variable_values(&variables, inputs, diags);
    let mut eval = Evaluator::new(dir, vars);
    eval.declare(variables.iter().map(|(n, _)| n.clone()));
    for (file, block) in &locals {
        for structure in block.body.iter() {
            match structure {
                Structure::Attribute(a) => {
                    if eval.has_local(a.key.as_str()) {
                        diags.error(
                            format!("local value `{}` is defined twice", a.key.as_str()),
                            span_of(*file, &a.key),
                        );
                    }
                    eval.add_local(a.key.to_string(), *file, &a.value);
                }
                Structure::Block(b) => diags.error(
                    "`locals` holds attributes only, not blocks",
                    span_of(*file, &b.ident),
                ),
            }
        }
    }

    // The declaration blocks themselves: check their attributes.
    for (name, declared) in &variables {
        let mut r = BlockReader::new(
            &eval,
            diags,
            declared.file,
            declared.block,
            format!("variable \"{name}\""),
        );
        r.has("type");
        r.has("default");
        r.string("description");
        r.has("sensitive");
        r.finish();
    }

    let backend = read_backend(&eval, diags, dir, &immune);
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for (file, block, name) in fleets {
        if seen.contains(&name) {
            diags.error(
                format!("fleet `{name}` is defined twice"),
                span_of(file, &block.labels[0]),
            );
            continue;
        }
        seen.push(name.clone());
        out.push(read_fleet(&eval, diags, sources, file, block, name));
    }
    diags.0.extend(eval.local_errors.borrow_mut().drain(..));
    Some(Config {
        dir: dir.to_path_buf(),
        backend,
        fleets: out,
    })
}

fn variable_values(
    declared: &[(String, Declared)],
    inputs: &VarInputs,
    diags: &mut Diagnostics,
) -> Map<String, Value> {
    // Precedence as Terraform's: default < environment < var files < --var.
    let mut raw: Vec<(String, RawValue)> = Vec::new();
    for (name, value) in &inputs.env {
        raw.push((
            name.clone(),
            RawValue::Text(value.clone(), "environment variable"),
        ));
    }
    for path in &inputs.files {
        match read_var_file(path) {
            Ok(values) => raw.extend(values.into_iter().map(|(k, v)| (k, RawValue::Parsed(v)))),
            Err(message) => diags.error(message, None),
        }
    }
    for (name, value) in &inputs.cli {
        raw.push((name.clone(), RawValue::Text(value.clone(), "--var")));
    }

    let mut vars = Map::new();
    for (name, value) in raw {
        let Some((_, decl)) = declared.iter().find(|(n, _)| *n == name) else {
            // As Terraform: environment values and variable files may carry values for
            // other configurations; a --var for an undeclared name is most likely a typo.
            if matches!(value, RawValue::Text(_, "--var")) {
                let names: Vec<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
                let d = Diagnostic::new(
                    format!("value given for undeclared variable `{name}`"),
                    None,
                );
                diags.push(match did_you_mean(&name, &names) {
                    Some(n) => d.with_hint(format!("did you mean `{n}`?")),
                    None => d.with_hint(format!("declare it with `variable \"{name}\" {{}}`")),
                });
            }
            continue;
        };
        let value = match value {
            RawValue::Parsed(v) => v,
            // A string variable takes the text as it is; other types parse it as HCL.
            RawValue::Text(text, _) if decl.ty == VarType::String || decl.ty == VarType::Any => {
                Value::String(text)
            }
            RawValue::Text(text, origin) => match hcl::from_str::<Value>(&format!("v = {text}")) {
                Ok(Value::Object(mut o)) => o.swap_remove("v").unwrap_or(Value::Null),
                _ => {
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
                vars.insert(name, v);
            }
            Err(message) => diags.error(
                format!("invalid value for variable `{name}`: {message}"),
                None,
            ),
        }
    }

    for (name, decl) in declared {
        if vars.contains_key(name) {
            continue;
        }
        match decl.block.body.get_attribute("default") {
            Some(attr) => {
                let no_vars = Evaluator::new(Path::new("."), Map::new());
                match no_vars.eval(decl.file, &attr.value) {
                    Ok(v) => match decl.ty.convert(v) {
                        Ok(v) => {
                            vars.insert(name.clone(), v);
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
            None => diags.push(
                Diagnostic::new(
                    format!("no value for required variable `{name}`"),
                    span_of(decl.file, &decl.block.labels[0]),
                )
                .with_hint(format!(
                    "pass --var {name}=VALUE, set IMMUNE_VAR_{name}, or give it a default"
                )),
            ),
        }
    }
    vars
}

enum RawValue {
    Text(String, &'static str),
    Parsed(Value),
}

fn read_var_file(path: &Path) -> Result<Vec<(String, Value)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read variable file {}: {e}", path.display()))?;
    match hcl::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map.into_iter().collect()),
        Ok(_) => Err(format!(
            "variable file {} must hold `name = value` lines",
            path.display()
        )),
        Err(e) => Err(format!("variable file {}: {e}", path.display())),
    }
}

fn read_backend(
    eval: &Evaluator,
    diags: &mut Diagnostics,
    dir: &Path,
    blocks: &[(FileId, &Block)],
) -> Backend {
    let default = Backend::Local {
        path: dir.join(".immune/state.json"),
    };
    let mut backend = default.clone();
    for (i, (file, block)) in blocks.iter().enumerate() {
        if i > 0 {
            diags.error(
                "only one `immune` block is allowed",
                span_of(*file, &block.ident),
            );
            continue;
        }
        let mut r = BlockReader::new(eval, diags, *file, block, "immune".into());
        if let Some(b) = r.block("backend") {
            match b.labels.first().map(|l| l.as_str()) {
                Some("local") => {
                    let mut br = r.nested(b, "backend \"local\"".into());
                    if let Some(path) = br.string("path") {
                        backend = Backend::Local {
                            path: dir.join(path),
                        };
                    }
                    br.finish();
                }
                other => r.diags.push(
                    Diagnostic::new(
                        format!(
                            "unsupported backend {}",
                            other.map_or("(none)".into(), |o| format!("`{o}`"))
                        ),
                        span_of(*file, &b.ident),
                    )
                    .with_hint("use backend \"local\" { path = \"...\" }"),
                ),
            }
        }
        r.finish();
    }
    backend
}

fn read_fleet(
    eval: &Evaluator,
    diags: &mut Diagnostics,
    sources: &Sources,
    file: FileId,
    block: &Block,
    name: String,
) -> Fleet {
    let what = format!("fleet \"{name}\"");
    let location = span_of(file, &block.ident);
    let mut r = BlockReader::new(eval, diags, file, block, what);
    if !valid_fleet_name(&name) {
        r.diags.error(
            format!("fleet name `{name}` must be 1 to 20 lowercase letters, digits or hyphens, starting with a letter"),
            span_of(file, &block.labels[0]),
        );
    }
    let region = r.string("region");
    let release = r.string("release");

    let image = match r.required_block("image") {
        Some(b) => {
            let mut ir = r.nested(b, "image".into());
            let spec = ImageSpec {
                source_ami: ir.required_string("source_ami"),
                instance_type: ir.required_string("instance_type"),
                provision: ir.string("provision"),
                name: ir.string("name"),
                keep: ir.number("keep", 1..=100, Some(3)) as u32,
            };
            ir.finish();
            spec
        }
        None => ImageSpec {
            source_ami: String::new(),
            instance_type: String::new(),
            provision: None,
            name: None,
            keep: 3,
        },
    };

    let instances = match r.required_block("instances") {
        Some(b) => {
            let mut ir = r.nested(b, "instances".into());
            let instance_type = ir.required_string("instance_type");
            let subnets = ir.strings("subnets");
            let security_groups = ir.strings("security_groups");
            let user_data = ir.string("user_data");
            let capacity = match ir.required_block("capacity") {
                Some(c) => {
                    let mut cr = ir.nested(c, "capacity".into());
                    let min = cr.number("min", 0..=1000, None) as u32;
                    let max = cr.number("max", 1..=1000, None) as u32;
                    let desired = cr.number("desired", 0..=1000, None) as u32;
                    if !(min <= desired && desired <= max) {
                        let span = cr.span.clone();
                        cr.diags.push(
                            Diagnostic::new(
                                format!("capacity must satisfy min <= desired <= max, got min {min}, desired {desired}, max {max}"),
                                span,
                            ),
                        );
                    }
                    cr.finish();
                    Capacity { min, max, desired }
                }
                None => Capacity {
                    min: 1,
                    max: 1,
                    desired: 1,
                },
            };
            ir.finish();
            InstanceSpec {
                instance_type,
                subnets,
                security_groups,
                user_data,
                capacity,
            }
        }
        None => InstanceSpec {
            instance_type: String::new(),
            subnets: Vec::new(),
            security_groups: Vec::new(),
            user_data: None,
            capacity: Capacity {
                min: 1,
                max: 1,
                desired: 1,
            },
        },
    };

    let traffic = r.block("traffic");
    let traffic = match traffic {
        Some(b) => read_traffic(&mut r.nested(b, "traffic".into())),
        None => {
            let span = r.span.clone();
            r.diags.push(
                Diagnostic::new(format!("fleet `{name}` has no `traffic` block"), span)
                    .with_hint("worker fleets (without a load balancer) are not supported yet; add traffic { load_balancer = \"...\" listener_port = 80 port = 8080 }"),
            );
            placeholder_traffic()
        }
    };

    let rollout = match r.block("rollout") {
        Some(b) => read_rollout(&mut r.nested(b, "rollout".into())),
        None => default_rollout(vec![100]),
    };
    r.finish();

    Fleet {
        name,
        region,
        release,
        image,
        instances,
        traffic,
        rollout,
        location: location
            .map(|span| {
                let at = sources.position(&span);
                format!("{}:{}:{}", at.path.display(), at.line, at.column)
            })
            .unwrap_or_default(),
    }
}

fn valid_fleet_name(name: &str) -> bool {
    // Group names are `<fleet>-v001`; target group names are limited to 32 characters.
    (1..=20).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

fn read_traffic(r: &mut BlockReader) -> Traffic {
    let given = (r.has("listener_arn"), r.has("load_balancer"));
    let arn = r.string("listener_arn");
    let lb = r.string("load_balancer");
    let has_port = r.has("listener_port");
    let listener_port = r.number("listener_port", 1..=65535, Some(80)) as u16;
    let listener = match (arn, lb) {
        (Some(arn), None) => {
            if has_port {
                let span = r.span.clone();
                r.diags.error(
                    "`listener_port` goes with `load_balancer`, not `listener_arn`",
                    span,
                );
            }
            ListenerRef::Arn(arn)
        }
        (None, Some(name)) => ListenerRef::LoadBalancer {
            name,
            port: listener_port,
        },
        // Given but not evaluated: the reason is reported already.
        (None, None) if given.0 || given.1 => ListenerRef::Arn(String::new()),
        (arn, lb) => {
            let span = r.span.clone();
            r.diags.push(
                Diagnostic::new(
                    if arn.is_some() && lb.is_some() {
                        "traffic has both `listener_arn` and `load_balancer`; give one"
                    } else {
                        "traffic needs `listener_arn` or `load_balancer`"
                    },
                    span,
                )
                .with_hint("load_balancer = \"web\" with listener_port = 80, or listener_arn = \"arn:...\""),
            );
            ListenerRef::Arn(String::new())
        }
    };
    let port = r.number("port", 1..=65535, None) as u16;
    let health_check = match r.block("health_check") {
        Some(b) => {
            let mut hr = r.nested(b, "health_check".into());
            let check = HealthCheck {
                path: hr.string("path").unwrap_or_else(|| "/".into()),
                interval: hr.duration("interval", Duration::from_secs(30)),
                healthy_threshold: hr.number("healthy_threshold", 2..=10, Some(5)) as u32,
                unhealthy_threshold: hr.number("unhealthy_threshold", 2..=10, Some(2)) as u32,
            };
            hr.finish();
            check
        }
        None => default_health_check(),
    };
    let deregistration_delay = r.duration("deregistration_delay", Duration::from_secs(300));
    Traffic {
        listener,
        port,
        health_check,
        deregistration_delay,
    }
}

fn default_health_check() -> HealthCheck {
    HealthCheck {
        path: "/".into(),
        interval: Duration::from_secs(30),
        healthy_threshold: 5,
        unhealthy_threshold: 2,
    }
}

fn placeholder_traffic() -> Traffic {
    Traffic {
        listener: ListenerRef::Arn(String::new()),
        port: 80,
        health_check: default_health_check(),
        deregistration_delay: Duration::ZERO,
    }
}

fn default_rollout(steps: Vec<u8>) -> RolloutSpec {
    RolloutSpec {
        steps,
        pause: Duration::from_secs(300),
        healthy_within: Duration::from_secs(600),
        keep_previous: 0,
        poll_interval: Duration::from_secs(5),
        gates: Vec::new(),
    }
}

fn read_rollout(r: &mut BlockReader) -> RolloutSpec {
    let steps = match r.value("steps") {
        None => vec![100],
        Some((value, span)) => match steps_of(&value) {
            Ok(steps) => steps,
            Err(message) => {
                r.diags.push(Diagnostic::new(message, span).with_hint(
                    "steps are percentages of traffic on the new release, such as [5, 25, 50, 100]",
                ));
                vec![100]
            }
        },
    };
    let defaults = default_rollout(steps);
    let pause = r.duration("pause", defaults.pause);
    let healthy_within = r.duration("healthy_within", defaults.healthy_within);
    let keep_previous = r.number("keep_previous", 0..=10, Some(0)) as u32;
    let poll_interval = r.duration("poll_interval", defaults.poll_interval);
    if poll_interval.is_zero() {
        let span = r.span.clone();
        r.diags
            .error("`poll_interval` must be longer than zero", span);
    }
    let mut gates = Vec::new();
    for gate in r.blocks("gate") {
        let Some(name) = gate.labels.first().map(|l| l.as_str().to_string()) else {
            let span = span_of(r.file, &gate.ident);
            r.diags.error(
                "`gate` block needs a name, as in `gate \"errors\" { }`",
                span,
            );
            continue;
        };
        if gates.iter().any(|g: &Gate| g.name == name) {
            let span = span_of(r.file, &gate.ident);
            r.diags.error(format!("duplicate gate \"{name}\""), span);
            continue;
        }
        let mut gr = r.nested(gate, format!("gate \"{name}\""));
        if let Some(check) = read_gate_check(&mut gr) {
            gates.push(read_gate(&mut gr, name, check));
        }
        gr.finish();
    }
    RolloutSpec {
        pause,
        healthy_within,
        keep_previous,
        poll_interval,
        gates,
        ..defaults
    }
}

fn read_gate_check(r: &mut BlockReader) -> Option<GateCheck> {
    let alarm = r.string("alarm");
    let metric = r.block("metric");
    match (alarm, metric) {
        (Some(alarm), None) => Some(GateCheck::Alarm(alarm)),
        (None, Some(block)) => {
            let mut mr = r.nested(block, "metric".into());
            let metric = read_metric(&mut mr);
            mr.finish();
            Some(GateCheck::Metric(metric))
        }
        (alarm, metric) => {
            let both = alarm.is_some() && metric.is_some();
            let span = r.span.clone();
            r.diags.push(
                Diagnostic::new(
                    if both {
                        format!("{} has both `alarm` and `metric`; give one", r.what)
                    } else {
                        format!("{} needs `alarm` or a `metric` block", r.what)
                    },
                    span,
                )
                .with_hint("alarm = \"web-5xx\" reads an existing alarm; metric { namespace = ... name = ... threshold = ... } makes one per release"),
            );
            None
        }
    }
}

fn read_gate(r: &mut BlockReader, name: String, check: GateCheck) -> Gate {
    let insufficient_data = match r.choice("insufficient_data", &["hold", "pass", "fail"], "pass") {
        "hold" => OnInsufficientData::Hold,
        "fail" => OnInsufficientData::Fail,
        _ => OnInsufficientData::Pass,
    };
    let mode = match r.choice("mode", &["enforce", "dry-run", "manual"], "enforce") {
        "dry-run" => GateMode::DryRun,
        "manual" => GateMode::Manual,
        _ => GateMode::Enforce,
    };
    Gate {
        name,
        check,
        insufficient_data,
        mode,
    }
}

fn read_metric(r: &mut BlockReader) -> MetricSpec {
    let namespace = r.required_string("namespace");
    let name = r.required_string("name");
    let dimensions = r.string_map("dimensions");
    let statistic = r.string("statistic").unwrap_or_else(|| "Average".into());
    if !valid_statistic(&statistic) {
        let span = r.span.clone();
        r.diags.push(
            Diagnostic::new(format!("unknown statistic \"{statistic}\""), span).with_hint(
                "use Average, Sum, Minimum, Maximum, SampleCount or a percentile such as p99",
            ),
        );
    }
    let period = r.duration("period", Duration::from_secs(60));
    let secs = period.as_secs();
    if !matches!(secs, 10 | 20 | 30) && (secs == 0 || !secs.is_multiple_of(60)) {
        let span = r.span.clone();
        r.diags.error(
            "metric `period` must be 10s, 20s, 30s or a multiple of 60s (CloudWatch's rule)",
            span,
        );
    }
    let evaluation_periods = r.number("evaluation_periods", 1..=100, Some(1)) as u32;
    let threshold = r.float("threshold").unwrap_or_default();
    let comparison = match r.value("comparison") {
        None => Comparison::Greater,
        Some((value, span)) => match value.as_str().and_then(Comparison::parse) {
            Some(c) => c,
            None => {
                r.diags.push(
                    Diagnostic::new(format!("unknown comparison {value}"), span)
                        .with_hint("comparison is one of \">\", \">=\", \"<\", \"<=\""),
                );
                Comparison::Greater
            }
        },
    };
    MetricSpec {
        namespace,
        name,
        dimensions,
        statistic,
        period,
        evaluation_periods,
        threshold,
        comparison,
    }
}

fn valid_statistic(s: &str) -> bool {
    matches!(s, "Average" | "Sum" | "Minimum" | "Maximum" | "SampleCount")
        || s.strip_prefix('p')
            .and_then(|p| p.parse::<f64>().ok())
            .is_some_and(|p| (0.0..=100.0).contains(&p))
}

fn steps_of(value: &Value) -> Result<Vec<u8>, String> {
    let Value::Array(items) = value else {
        return Err(format!(
            "`steps` must be a list of percentages, found {}",
            type_name(value)
        ));
    };
    let mut steps = Vec::new();
    for item in items {
        match item.as_u64() {
            Some(p @ 1..=100) => steps.push(p as u8),
            _ => {
                return Err(format!(
                    "step {item} is not a whole percentage from 1 to 100"
                ))
            }
        }
    }
    if steps.windows(2).any(|w| w[0] >= w[1]) {
        return Err("`steps` must be strictly increasing".into());
    }
    if steps.last() != Some(&100) {
        return Err("`steps` must end at 100".into());
    }
    Ok(steps)
}
