//! Loads a configuration: every `*.hcl` file of the directory and of the modules it
//! calls, variables from their sources, locals, fleets and outputs. All problems are
//! reported together.

use super::diagnostic::{did_you_mean, Diagnostic, Diagnostics};
use super::eval::{span_of, Call, Evaluator, ModuleValue};
use super::files::{Disk, Files, Memory};
use super::fleet::read_fleet;
use super::model::*;
use super::module::{discover, Unit};
use super::names::Source;
use super::reader::BlockReader;
use super::source::{FileId, Sources, Span};
use super::variables::{self, parse_type, Declared, Supplied, VarType};
use hcl::{Map, Value};
use hcl_edit::expr::Expression;
use hcl_edit::structure::{Block, Structure};
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// Where variable values come from, besides the defaults in the configuration.
#[derive(Debug, Clone, Default)]
pub struct VarInputs {
    /// Values carried by a saved plan (`apply FILE`): below every other source.
    pub saved: Vec<(String, Value)>,
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

/// What the configuration is loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `immune validate`: a required variable without a value is unknown, not an error.
    Validate,
    /// `plan` and `apply`: every variable needs a value.
    Plan,
    /// Commands about what already runs (`status`, `approve`, `rollback`, another
    /// environment's backend): as `Validate`, and the names of releases to come are not
    /// checked against AWS's rules, so that a configuration that could not release
    /// again can still roll back what runs.
    Running,
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

const TOP_LEVEL: &[&str] = &[
    "immune", "variable", "locals", "fleet", "module", "output", "notify",
];

/// Parsing and evaluation recurse; they run on a thread of their own with this much stack
/// so that everything `guard` lets through fits, in debug builds too. The memory is only
/// reserved, not used.
pub const PARSER_STACK: usize = 256 << 20;

/// Everything shared while the units of one configuration are evaluated.
pub struct Program<'a> {
    /// The configuration directory as given (`--chdir`), for paths in the model.
    pub dir: &'a Path,
    pub units: &'a [Unit],
    pub sources: &'a Sources,
    pub files: &'a dyn Files,
    pub mode: Mode,
    /// Problems found while instantiating modules from inside an evaluation.
    pub diags: RefCell<Diagnostics>,
}

/// Loads the configuration in `dir` for plan and apply.
pub fn load(dir: &Path, inputs: &VarInputs) -> Result<Config, ConfigError> {
    load_with(dir, inputs, Mode::Plan)
}

pub fn load_with(dir: &Path, inputs: &VarInputs, mode: Mode) -> Result<Config, ConfigError> {
    let files = Disk {
        root: dir.to_path_buf(),
    };
    if let Err(e) = std::fs::read_dir(dir) {
        return Err(single(format!(
            "cannot read configuration directory {}: {e}",
            dir.display()
        )));
    }
    on_big_stack_config(|| load_files(dir, &files, inputs, mode))
}

/// Loads a configuration held in memory: `(relative path, contents)` pairs, modules
/// included. Nothing is read from disk except `--var-file` files named in `inputs`.
pub fn load_sources(
    files: &[(PathBuf, Vec<u8>)],
    inputs: &VarInputs,
    mode: Mode,
) -> Result<Config, ConfigError> {
    let files = Memory::new(files.iter().map(|(p, b)| (p.as_path(), b.as_slice())));
    on_big_stack_config(|| load_files(Path::new("."), &files, inputs, mode))
}

fn single(message: String) -> ConfigError {
    let mut diagnostics = Diagnostics::default();
    diagnostics.error(message, None);
    ConfigError {
        sources: Sources::default(),
        diagnostics,
    }
}

fn on_big_stack_config(
    work: impl FnOnce() -> Result<Config, ConfigError> + Send,
) -> Result<Config, ConfigError> {
    on_big_stack(work).unwrap_or_else(|| {
        Err(single(
            "internal error while reading the configuration (a bug in immune; please report it)"
                .into(),
        ))
    })
}

/// Runs `work` on a thread with [`PARSER_STACK`]; `None` if it panicked or the thread
/// could not start.
pub(super) fn on_big_stack<T: Send>(work: impl FnOnce() -> T + Send) -> Option<T> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("config".into())
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, work)
            .ok()?
            .join()
            .ok()
    })
}

fn load_files(
    dir: &Path,
    files: &dyn Files,
    inputs: &VarInputs,
    mode: Mode,
) -> Result<Config, ConfigError> {
    let mut sources = Sources::default();
    let mut diags = Diagnostics::default();
    let fail = |sources, diagnostics| {
        Err(ConfigError {
            sources,
            diagnostics,
        })
    };
    if files
        .hcl_files(Path::new(""))
        .unwrap_or_default()
        .is_empty()
    {
        diags.push(
            Diagnostic::new(format!("no *.hcl files in {}", dir.display()), None).with_hint(
                "run immune in the directory of your configuration, or pass --chdir DIR",
            ),
        );
        return fail(sources, diags);
    }
    let units = discover(files, &mut sources, &mut diags);
    let program = Program {
        dir,
        units: &units,
        sources: &sources,
        files,
        mode,
        diags: RefCell::new(diags),
    };
    let root = read_unit(&program, 0, Vec::new(), &Supplied::Root(inputs));
    let mut diags = program.diags.into_inner();
    let config = root.map(|root| {
        check_fleet_names(&sources, &root.value.fleets, &mut diags);
        let (backend, namespace, default_tags, default_tags_at) = match root.settings {
            Some(Settings {
                backend,
                namespace,
                default_tags,
                default_tags_at,
            }) => (backend, namespace, default_tags, default_tags_at),
            None => (
                Backend::Local {
                    path: dir.join(".immune/state.json"),
                },
                None,
                Default::default(),
                Place::default(),
            ),
        };
        let mut fleets: Vec<Fleet> = root.value.fleets.into_iter().map(|(f, _)| f).collect();
        for fleet in &mut fleets {
            if let Some((namespace, at)) = &namespace {
                fleet.namespace = Some(namespace.clone());
                // A name too long for AWS is the namespace's and the fleet's together;
                // the namespace is where the fleets meet.
                fleet.places.insert(Source::Name, at.clone());
            }
            fleet.default_tags = default_tags.clone();
            fleet
                .places
                .insert(Source::DefaultTags, default_tags_at.clone());
            if mode != Mode::Running {
                check_aws_names(fleet, namespace.is_some(), &mut diags);
            }
        }
        check_order(&fleets, &mut diags);
        Config {
            dir: dir.to_path_buf(),
            backend,
            namespace: namespace.map(|(n, _)| n),
            default_tags,
            fleets,
            outputs: root.outputs,
            variables: root.variables,
            notify: root.notify,
        }
    });
    tidy(&mut diags);
    match config {
        Some(config) if diags.is_empty() => Ok(config),
        _ => fail(sources, diags),
    }
}

/// `after` names fleets of this configuration and never goes round in a circle.
fn check_order(fleets: &[Fleet], diags: &mut Diagnostics) {
    let known: Vec<&str> = fleets.iter().map(|f| f.name.as_str()).collect();
    for fleet in fleets {
        for name in &fleet.rollout.after {
            if !known.contains(&name.as_str()) {
                let d = Diagnostic::new(
                    format!("fleet `{}` waits for fleet `{name}`, which the configuration does not have", fleet.name),
                    fleet.rollout.after_span.clone(),
                );
                diags.push(match did_you_mean(name, &known) {
                    Some(k) => d.with_hint(format!("did you mean fleet.{k}?")),
                    None => d.with_hint(format!("the fleets are: {}", known.join(", "))),
                });
            }
        }
    }
    // Each circle reported once, at the first fleet of it in the configuration.
    let after = |name: &str| {
        fleets
            .iter()
            .find(|f| f.name == name)
            .map_or(&[][..], |f| &f.rollout.after[..])
    };
    let mut reported: Vec<String> = Vec::new();
    for fleet in fleets {
        let mut path = vec![fleet.name.clone()];
        let mut seen = std::collections::BTreeSet::new();
        if let Some(circle) = circle_from(&fleet.name, &mut path, &mut seen, &after) {
            let mut members = circle.clone();
            members.sort();
            members.dedup();
            if reported.contains(&members.join(",")) {
                continue;
            }
            reported.push(members.join(","));
            diags.push(
                Diagnostic::new(
                    format!(
                        "fleets wait for each other in a circle: {}",
                        circle.join(" -> ")
                    ),
                    fleet.rollout.after_span.clone(),
                )
                .with_hint("one of them must not wait: remove it from the other's `after`"),
            );
        }
    }
}

/// A way back to `start` along `after`, as the names on it (start first and last).
/// A fleet in `seen` was explored already without leading back: it never will.
fn circle_from<'a>(
    start: &str,
    path: &mut Vec<String>,
    seen: &mut std::collections::BTreeSet<String>,
    after: &impl Fn(&str) -> &'a [String],
) -> Option<Vec<String>> {
    let last = path.last().expect("the path starts at start").clone();
    for next in after(&last) {
        if next == start {
            let mut circle = path.clone();
            circle.push(start.to_string());
            return Some(circle);
        }
        if !seen.insert(next.clone()) {
            continue;
        }
        path.push(next.clone());
        if let Some(found) = circle_from(start, path, seen, after) {
            return Some(found);
        }
        path.pop();
    }
    None
}

/// Problems in a module used twice are found twice; show each once, in file order.
fn tidy(diags: &mut Diagnostics) {
    let mut seen = Vec::new();
    diags.0.retain(|d| {
        let key = (d.summary.clone(), d.span.clone());
        let new = !seen.contains(&key);
        seen.push(key);
        new
    });
    diags
        .0
        .sort_by_key(|d| d.span.as_ref().map(|s| (s.file, s.range.start)));
}

fn check_fleet_names(sources: &Sources, fleets: &[(Fleet, Option<Span>)], diags: &mut Diagnostics) {
    for (i, (fleet, span)) in fleets.iter().enumerate() {
        if let Some((_, first)) = fleets[..i].iter().find(|(f, _)| f.name == fleet.name) {
            let d = Diagnostic::new(
                format!("fleet `{}` is defined twice", fleet.name),
                span.clone(),
            );
            diags.push(match first {
                Some(first) => {
                    let at = sources.position(first);
                    d.with_hint(format!(
                        "the first is at {}:{}:{}; fleet names must be unique across modules",
                        at.path.display(),
                        at.line,
                        at.column
                    ))
                }
                None => d,
            });
        }
    }
}

/// Every name and tag the fleet's releases would give AWS resources, against AWS's rules
/// (`config::names`): found at `validate` and `plan`, not by CreateImage after the bake.
/// Each problem points at what it comes from.
fn check_aws_names(fleet: &Fleet, namespace: bool, diags: &mut Diagnostics) {
    for problem in super::names::problems_of_every_release(fleet) {
        let place = fleet
            .places
            .get(&problem.sent.source)
            .cloned()
            .unwrap_or_default();
        let shown = !place.sensitive;
        let mut hint = problem.hint(shown, namespace);
        if !place.given.is_empty() {
            hint = format!("the value comes from {}; {hint}", place.given.join(" and "));
        }
        diags.push(Diagnostic::new(problem.summary(shown), place.span).with_hint(hint));
    }
}

/// What evaluating one unit produced.
pub struct UnitResult {
    pub value: ModuleValue,
    pub outputs: Vec<Output>,
    /// The root's `immune` block; `None` in a module.
    pub settings: Option<Settings>,
    /// The root's variables with their values; empty in a module.
    pub variables: Vec<Variable>,
    /// The root's `notify` blocks; empty in a module.
    pub notify: Vec<Notify>,
}

/// What the root's `immune` block says.
pub struct Settings {
    pub backend: Backend,
    /// `namespace = "staging"` and where it is written.
    pub namespace: Option<(String, Place)>,
    /// On everything immune creates.
    pub default_tags: std::collections::BTreeMap<String, String>,
    pub default_tags_at: Place,
}

/// Evaluates one unit (the root or a module instance).
pub fn read_unit<'a>(
    program: &'a Program<'a>,
    index: usize,
    module_path: Vec<String>,
    supplied: &Supplied,
) -> Option<UnitResult> {
    let unit = &program.units[index];
    let in_module = !module_path.is_empty();
    let mut diags = Diagnostics::default();

    // Pass 1: sort the top-level blocks by kind.
    let mut immune = Vec::new();
    let mut variables: Vec<Declared> = Vec::new();
    let mut locals = Vec::new();
    let mut fleets = Vec::new();
    let mut modules: Vec<(FileId, &Block, String)> = Vec::new();
    let mut outputs: Vec<(FileId, &Block, String)> = Vec::new();
    let mut notifies: Vec<(FileId, &Block, String)> = Vec::new();
    for (file, body) in &unit.files {
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
                        .with_hint("values at the top level go in a `locals { ... }` block; a file of variable values is not configuration: give it another extension than .hcl (such as prod.tfvars) and pass it with --var-file"),
                    );
                    continue;
                }
            };
            let labels: Vec<&str> = block.labels.iter().map(|l| l.as_str()).collect();
            let kind = block.ident.as_str();
            let expected_labels = match kind {
                "immune" | "locals" => 0,
                "variable" | "fleet" | "output" | "module" | "notify" => 1,
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
            let name = labels.first().map(|l| l.to_string()).unwrap_or_default();
            let duplicate = |what: &str, diags: &mut Diagnostics| {
                diags.error(
                    format!("{what} `{name}` is declared twice"),
                    span_of(file, &block.labels[0]),
                );
            };
            match kind {
                "immune" if in_module => diags.push(
                    Diagnostic::new(
                        "an `immune` block belongs in the root configuration, not in a module",
                        span_of(file, &block.ident),
                    )
                    .with_hint("the caller's backend holds the state of the module's fleets"),
                ),
                "immune" => immune.push((file, block)),
                "notify" if in_module => diags.push(
                    Diagnostic::new(
                        "a `notify` block belongs in the root configuration, not in a module",
                        span_of(file, &block.ident),
                    )
                    .with_hint("the root's notify blocks hear of every fleet, the modules' too"),
                ),
                "notify" if notifies.iter().any(|(_, _, n)| *n == name) => {
                    duplicate("notify", &mut diags)
                }
                "notify" => notifies.push((file, block, name)),
                "locals" => locals.push((file, block)),
                "fleet" => fleets.push((file, block, name)),
                "module" if modules.iter().any(|(_, _, n)| *n == name) => {
                    duplicate("module", &mut diags)
                }
                "module" => modules.push((file, block, name)),
                "output" if outputs.iter().any(|(_, _, n)| *n == name) => {
                    duplicate("output", &mut diags)
                }
                "output" => outputs.push((file, block, name)),
                _ if variables.iter().any(|d| d.name == name) => duplicate("variable", &mut diags),
                _ => {
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
                    variables.push(Declared {
                        name,
                        file,
                        block,
                        ty,
                    });
                }
            }
        }
    }

    let resolved = variables::resolve(program, &variables, supplied, &mut diags);
    // The root's values as resolved, for a saved plan to carry.
    let root_variables: Vec<Variable> = match in_module {
        true => Vec::new(),
        false => variables
            .iter()
            .filter_map(|d| {
                Some(Variable {
                    name: d.name.clone(),
                    value: resolved.values.get(&d.name)?.clone(),
                    sensitive: matches!(
                        d.block.body.get_attribute("sensitive").map(|a| &a.value),
                        Some(Expression::Bool(b)) if *b.value()
                    ),
                })
            })
            .collect(),
    };
    let mut eval = Evaluator::new(program, &unit.dir, module_path.clone(), resolved.values);
    eval.give(resolved.given);
    eval.declare(variables.iter().map(|d| d.name.clone()));
    for declared in &variables {
        // Marked before anything is evaluated, so every use is tracked.
        if matches!(
            declared.block.body.get_attribute("sensitive").map(|a| &a.value),
            Some(Expression::Bool(b)) if *b.value()
        ) {
            eval.mark_sensitive(declared.name.clone());
        }
    }
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
    for (file, block, name) in &modules {
        let call = Call {
            file: *file,
            block,
            unit: unit.calls.get(name).copied().flatten(),
        };
        eval.add_call(name.clone(), call);
    }

    // The declaration blocks themselves: check their attributes and validations.
    for declared in &variables {
        let name = &declared.name;
        let mut r = BlockReader::new(
            &eval,
            &mut diags,
            declared.file,
            declared.block,
            format!("variable \"{name}\""),
        );
        r.has("type");
        r.has("default");
        r.string("description");
        r.boolean("sensitive");
        variables::validate(&mut r, name, resolved.origins.get(name));
        r.finish();
    }

    let settings = (!in_module).then(|| read_immune(&eval, &mut diags, &immune));
    let mut own_fleets = Vec::new();
    for (file, block, label) in fleets {
        let name = fleet_name(&module_path, &label);
        if own_fleets
            .iter()
            .any(|(f, _, _): &(Fleet, _, _)| f.name == name)
        {
            diags.error(
                format!("fleet `{label}` is declared twice"),
                span_of(file, &block.labels[0]),
            );
            continue;
        }
        let fleet = read_fleet(
            &eval,
            &mut diags,
            program.sources,
            file,
            block,
            &label,
            name,
        );
        own_fleets.push((fleet, span_of(file, &block.labels[0]), label));
    }
    *eval.fleet_values.borrow_mut() = Some(
        own_fleets
            .iter()
            .map(|(f, _, label)| (label.clone(), fleet_value(f)))
            .collect(),
    );
    eval.instantiate_all();

    let mut value = ModuleValue {
        outputs: Map::new(),
        sensitive: Vec::new(),
        unknown: Vec::new(),
        fleets: own_fleets.into_iter().map(|(f, s, _)| (f, s)).collect(),
    };
    let mut listed = Vec::new();
    for (file, block, name) in &outputs {
        let mut r = BlockReader::new(
            &eval,
            &mut diags,
            *file,
            block,
            format!("output \"{name}\""),
        );
        let description = r.string("description");
        let sensitive = r.boolean("sensitive").unwrap_or(false);
        let present = r.has("value");
        r.finish();
        let Some(attr) = block.body.get_attribute("value").filter(|_| present) else {
            let d = Diagnostic::new(
                format!("missing required attribute `value` in output \"{name}\""),
                span_of(*file, &block.ident),
            );
            diags.push(d.with_hint("add `value = ...` to the output block"));
            continue;
        };
        let (result, touched) = eval.eval_tracked(*file, &attr.value);
        match result {
            Ok(v) => {
                if touched && !sensitive {
                    diags.push(
                        Diagnostic::new(
                            format!("output `{name}` shows a sensitive value"),
                            span_of(*file, &attr.value),
                        )
                        .with_hint("add `sensitive = true` to the output block if it is meant to be used elsewhere"),
                    );
                }
                if sensitive || touched {
                    value.sensitive.push(name.clone());
                }
                value.outputs.insert(name.clone(), v.clone());
                listed.push(Output {
                    name: name.clone(),
                    description,
                    sensitive: sensitive || touched,
                    value: v,
                });
            }
            Err(Some(d)) => {
                diags.push(d);
                value.unknown.push(name.clone());
            }
            Err(None) => value.unknown.push(name.clone()),
        }
    }

    let mut notify = Vec::new();
    for (file, block, name) in &notifies {
        let mut r = BlockReader::new(
            &eval,
            &mut diags,
            *file,
            block,
            format!("notify \"{name}\""),
        );
        notify.extend(super::notify::read(&mut r, name));
        r.finish();
    }

    // Children's fleets follow the unit's own, in the order the calls are written.
    for (_, _, name) in &modules {
        if let Some(Some(child)) = eval.module_value(name) {
            value.fleets.extend(child.fleets);
        }
    }
    diags.0.extend(eval.local_errors.borrow_mut().drain(..));
    program.diags.borrow_mut().0.extend(diags.0);
    Some(UnitResult {
        value,
        outputs: listed,
        settings,
        variables: root_variables,
        notify,
    })
}

/// A fleet in a module is named after the calls that lead to it, so that two calls of
/// one module make two fleets: `fleet "api"` in `module "checkout"` is `checkout-api`,
/// and a module's single `fleet "this"` takes the call's name, `checkout`.
pub(super) fn fleet_name(module_path: &[String], label: &str) -> String {
    let mut parts = module_path.to_vec();
    if parts.is_empty() || label != "this" {
        parts.push(label.to_string());
    }
    parts.join("-")
}

/// What `fleet.NAME` shows to outputs. `group` is the active group, known only after
/// apply: like the release references it is a marker, `${fleet.NAME.group}`.
fn fleet_value(fleet: &Fleet) -> Value {
    let opt = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
    let mut map = Map::new();
    map.insert("name".into(), Value::String(fleet.name.clone()));
    map.insert("region".into(), opt(&fleet.region));

    map.insert(
        "instance_type".into(),
        Value::String(fleet.instances.instance_type.clone()),
    );
    let capacity = fleet.instances.capacity;
    map.insert(
        "capacity".into(),
        Value::Object(Map::from_iter([
            ("min".to_string(), Value::from(capacity.min)),
            ("max".to_string(), Value::from(capacity.max)),
            ("desired".to_string(), Value::from(capacity.desired)),
        ])),
    );
    // A worker fleet has none of them.
    let (load_balancer, listener_arn) = match fleet.traffic.as_ref().map(|t| &t.listener) {
        Some(ListenerRef::LoadBalancer { name, .. }) => (Value::String(name.clone()), Value::Null),
        Some(ListenerRef::Arn(arn)) => (Value::Null, Value::String(arn.clone())),
        None => (Value::Null, Value::Null),
    };
    map.insert("load_balancer".into(), load_balancer);
    map.insert("listener_arn".into(), listener_arn);
    map.insert(
        "port".into(),
        fleet
            .traffic
            .as_ref()
            .map_or(Value::Null, |t| Value::from(t.port)),
    );
    map.insert(
        "group_prefix".into(),
        Value::String(format!("{}-v", fleet.name)),
    );
    // Known only after apply: markers that `crate::outputs` resolves from the state.
    for attribute in crate::outputs::LIVE_ATTRIBUTES {
        map.insert(
            attribute.into(),
            Value::String(format!("${{fleet.{}.{attribute}}}", fleet.name)),
        );
    }
    Value::Object(map)
}

fn read_immune(eval: &Evaluator, diags: &mut Diagnostics, blocks: &[(FileId, &Block)]) -> Settings {
    let dir = eval.program.dir;
    let mut backend = Backend::Local {
        path: dir.join(".immune/state.json"),
    };
    let mut namespace = None;
    let mut default_tags = Default::default();
    let mut default_tags_at = Place::default();
    for (i, (file, block)) in blocks.iter().enumerate() {
        if i > 0 {
            diags.error(
                "only one `immune` block is allowed",
                span_of(*file, &block.ident),
            );
            continue;
        }
        let mut r = BlockReader::new(eval, diags, *file, block, "immune".into());
        if let Some((value, span)) = r.value("namespace") {
            match value {
                hcl::Value::String(name) if super::fleet::valid_name_part(&name) => {
                    namespace = Some((name, r.place("namespace")));
                }
                other => r.diags.push(
                    Diagnostic::new(
                        format!("namespace {other} is not a valid name prefix"),
                        span,
                    )
                    .with_hint("use 1 to 20 lowercase letters, digits and dashes, starting with a letter, e.g. namespace = \"staging\""),
                ),
            }
        }
        default_tags = r.tags("default_tags");
        default_tags_at = r.place("default_tags");
        if let Some(b) = r.block("backend") {
            if let Some(read) = read_backend(&mut r, b, dir) {
                backend = read;
            }
        }
        r.finish();
    }
    Settings {
        backend,
        namespace,
        default_tags,
        default_tags_at,
    }
}

/// A `backend "local" { path }` or `backend "s3" { bucket, key, region }` block; `None`
/// when it is wrong (the problem is recorded). Paths are relative to `dir`.
pub(super) fn read_backend<'a>(
    r: &mut BlockReader<'_, 'a>,
    b: &'a Block,
    dir: &Path,
) -> Option<Backend> {
    match b.labels.first().map(|l| l.as_str()) {
        Some("local") => {
            let mut br = r.nested(b, "backend \"local\"".into());
            let path = br.string("path");
            br.finish();
            Some(Backend::Local {
                path: dir.join(path.as_deref().unwrap_or(".immune/state.json")),
            })
        }
        Some("s3") => {
            let mut br = r.nested(b, "backend \"s3\"".into());
            let bucket = br.required_string("bucket");
            let key = br.required_string("key");
            let region = br.string("region");
            br.finish();
            (!bucket.is_empty() && !key.is_empty()).then_some(Backend::S3 {
                bucket,
                key,
                region,
            })
        }
        other => {
            r.diags.push(
                Diagnostic::new(
                    format!(
                        "unsupported backend {}",
                        other.map_or("(none)".into(), |o| format!("`{o}`"))
                    ),
                    span_of(r.file, &b.ident),
                )
                .with_hint("use backend \"local\" { path = \"...\" } or backend \"s3\" { bucket = \"...\", key = \"...\", region = \"...\" }"),
            );
            None
        }
    }
}
