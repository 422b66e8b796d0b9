//! Expression evaluation over the spanned syntax tree of `hcl-edit`, so that every failure
//! points at the sub-expression that caused it (hcl-rs's own evaluator loses spans).

use super::diagnostic::{did_you_mean, Diagnostic};
use super::functions;
use super::load::Program;
use super::source::{FileId, Span};
use hcl::{Map, Number, Value};
use hcl_edit::expr::{BinaryOperator, Expression, TraversalOperator, UnaryOperator};
use hcl_edit::structure::Block;
use hcl_edit::template::{Element, Template};
use hcl_edit::Span as _;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Deeply nested input must end in an error, not a stack overflow.
const MAX_DEPTH: usize = 256;

/// `Err(None)` means the failure was already reported elsewhere (a broken local), so
/// the caller must not report it again.
pub type Eval<T> = Result<T, Option<Diagnostic>>;

/// Names bound while evaluating: template variables, `for` iterators.
#[derive(Default)]
pub struct Scope<'s> {
    names: Vec<(String, Value)>,
    parent: Option<&'s Scope<'s>>,
}

impl<'s> Scope<'s> {
    pub fn with(names: Vec<(String, Value)>) -> Self {
        Scope {
            names,
            parent: None,
        }
    }

    fn child(&'s self, names: Vec<(String, Value)>) -> Scope<'s> {
        Scope {
            names,
            parent: Some(self),
        }
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.names
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .or_else(|| self.parent.and_then(|p| p.get(name)))
    }
}

struct Local<'a> {
    file: FileId,
    expr: &'a Expression,
}

/// What one evaluation read.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub sensitive: bool,
    /// The unit's variables, by name.
    pub vars: BTreeSet<String>,
}

/// A `module` block of the unit being evaluated, instantiated when first referenced.
pub struct Call<'a> {
    pub file: FileId,
    pub block: &'a Block,
    /// The unit its source loads; `None` when loading failed (already reported).
    pub unit: Option<usize>,
}

/// A module's outputs, and which of them are sensitive.
#[derive(Clone)]
pub struct ModuleValue {
    pub outputs: Map<String, Value>,
    pub sensitive: Vec<String>,
    /// Outputs whose value is not known (a required variable without a value in
    /// `validate`, or a problem already reported): using them is silent.
    pub unknown: Vec<String>,
    /// The fleets the module declares, with the span of each one's label.
    pub fleets: Vec<(super::model::Fleet, Option<Span>)>,
}

pub struct Evaluator<'a> {
    pub program: &'a Program<'a>,
    /// The directory of the unit's files, relative to the configuration directory:
    /// `file()` and module sources are relative to it.
    base_dir: PathBuf,
    /// `module.a.module.b`: the calls that led to this unit, for fleet names and messages.
    pub module_path: Vec<String>,
    vars: Map<String, Value>,
    sensitive_vars: Vec<String>,
    /// Set when an evaluation reads a sensitive value, so an output that shows it can be
    /// refused unless it is marked sensitive too (as Terraform does).
    touched_sensitive: Cell<bool>,
    /// The variables an evaluation read, so a message about a value can say where it
    /// came from (`--var release`).
    touched_vars: RefCell<BTreeSet<String>>,
    /// For each variable, the sources outside the configuration its value came from.
    given: HashMap<String, Vec<String>>,
    /// Declared variables, with or without a value: a missing value is reported once at
    /// its declaration, not again at every use.
    declared: Vec<String>,
    locals: HashMap<String, Local<'a>>,
    local_values: RefCell<HashMap<String, Option<(Value, Trace)>>>,
    calls: HashMap<String, Call<'a>>,
    module_values: RefCell<HashMap<String, Option<ModuleValue>>>,
    /// The unit's fleets as `fleet.NAME` sees them; set once they are read, so only
    /// outputs can use them.
    pub fleet_values: RefCell<Option<Map<String, Value>>>,
    in_progress: RefCell<Vec<String>>,
    /// Problems found while evaluating locals, reported once however often they are used.
    pub local_errors: RefCell<Vec<Diagnostic>>,
    depth: RefCell<usize>,
}

impl<'a> Evaluator<'a> {
    pub fn new(
        program: &'a Program<'a>,
        base_dir: &Path,
        module_path: Vec<String>,
        vars: Map<String, Value>,
    ) -> Self {
        Evaluator {
            program,
            base_dir: base_dir.to_path_buf(),
            module_path,
            declared: vars.keys().cloned().collect(),
            vars,
            sensitive_vars: Vec::new(),
            touched_sensitive: Cell::new(false),
            touched_vars: RefCell::default(),
            given: HashMap::new(),
            locals: HashMap::new(),
            local_values: RefCell::default(),
            calls: HashMap::new(),
            module_values: RefCell::default(),
            fleet_values: RefCell::default(),
            in_progress: RefCell::default(),
            local_errors: RefCell::default(),
            depth: RefCell::new(0),
        }
    }

    pub fn add_local(&mut self, name: String, file: FileId, expr: &'a Expression) {
        self.locals.insert(name, Local { file, expr });
    }

    pub fn declare(&mut self, names: impl IntoIterator<Item = String>) {
        self.declared.extend(names);
    }

    pub fn mark_sensitive(&mut self, name: String) {
        self.sensitive_vars.push(name);
    }

    pub fn add_call(&mut self, name: String, call: Call<'a>) {
        self.calls.insert(name, call);
    }

    /// Records, for each variable, where its value came from outside the configuration.
    pub fn give(&mut self, given: HashMap<String, Vec<String>>) {
        self.given = given;
    }

    /// Evaluates `expr` and says whether it read a sensitive value.
    pub fn eval_tracked(&self, file: FileId, expr: &Expression) -> (Eval<Value>, bool) {
        let (result, trace) = self.eval_traced(file, expr);
        (result, trace.sensitive)
    }

    /// Evaluates `expr` and says what it read.
    pub fn eval_traced(&self, file: FileId, expr: &Expression) -> (Eval<Value>, Trace) {
        let sensitive_before = self.touched_sensitive.replace(false);
        let vars_before = self.touched_vars.take();
        let result = self.eval(file, expr);
        let trace = Trace {
            sensitive: self.touched_sensitive.replace(sensitive_before),
            vars: self.touched_vars.replace(vars_before),
        };
        // An evaluation inside another one reads for both.
        self.touched_sensitive
            .set(sensitive_before || trace.sensitive);
        self.touched_vars
            .borrow_mut()
            .extend(trace.vars.iter().cloned());
        (result, trace)
    }

    /// Where the values of `vars` came from outside the configuration.
    pub fn given_by(&self, vars: &BTreeSet<String>) -> Vec<String> {
        let mut given: Vec<String> = Vec::new();
        for source in vars.iter().filter_map(|v| self.given.get(v)).flatten() {
            if !given.contains(source) {
                given.push(source.clone());
            }
        }
        given
    }

    pub fn has_local(&self, name: &str) -> bool {
        self.locals.contains_key(name)
    }

    pub fn eval(&self, file: FileId, expr: &Expression) -> Eval<Value> {
        self.eval_in(file, expr, &Scope::default())
    }

    pub fn eval_in(&self, file: FileId, expr: &Expression, scope: &Scope) -> Eval<Value> {
        let span = span_of(file, expr);
        {
            let mut depth = self.depth.borrow_mut();
            if *depth >= MAX_DEPTH {
                return Err(Some(Diagnostic::new(
                    format!("expression is nested more than {MAX_DEPTH} levels deep"),
                    span,
                )));
            }
            *depth += 1;
        }
        let result = self.eval_inner(file, expr, scope, span);
        *self.depth.borrow_mut() -= 1;
        result
    }

    fn eval_inner(
        &self,
        file: FileId,
        expr: &Expression,
        scope: &Scope,
        span: Option<Span>,
    ) -> Eval<Value> {
        let fail = |msg: String| Err(Some(Diagnostic::new(msg, span.clone())));
        match expr {
            Expression::Null(_) => Ok(Value::Null),
            Expression::Bool(b) => Ok(Value::Bool(*b.value())),
            Expression::Number(n) => Ok(Value::Number(*n.value())),
            Expression::String(s) => Ok(Value::String(s.value().to_string())),
            Expression::Array(items) => items
                .iter()
                .map(|e| self.eval_in(file, e, scope))
                .collect::<Eval<Vec<_>>>()
                .map(Value::Array),
            Expression::Object(object) => {
                let mut map = Map::new();
                for (key, value) in object.iter() {
                    let key = match key {
                        hcl_edit::expr::ObjectKey::Ident(ident) => ident.as_str().to_string(),
                        hcl_edit::expr::ObjectKey::Expression(e) => {
                            match self.eval_in(file, e, scope)? {
                                Value::String(s) => s,
                                Value::Number(n) => n.to_string(),
                                Value::Bool(b) => b.to_string(),
                                other => {
                                    return Err(Some(Diagnostic::new(
                                        format!(
                                            "object key must be a string, found {}",
                                            type_name(&other)
                                        ),
                                        span_of(file, e),
                                    )))
                                }
                            }
                        }
                    };
                    map.insert(key, self.eval_in(file, value.expr(), scope)?);
                }
                Ok(Value::Object(map))
            }
            Expression::StringTemplate(template) => self.template(file, template, scope),
            Expression::HeredocTemplate(heredoc) => self.template(file, &heredoc.template, scope),
            Expression::Parenthesis(inner) => self.eval_in(file, inner.inner(), scope),
            Expression::Variable(name) => self.root(name.as_str(), scope, span),
            Expression::Conditional(c) => match self.eval_in(file, &c.cond_expr, scope)? {
                Value::Bool(true) => self.eval_in(file, &c.true_expr, scope),
                Value::Bool(false) => self.eval_in(file, &c.false_expr, scope),
                other => Err(Some(Diagnostic::new(
                    format!("condition must be a bool, found {}", type_name(&other)),
                    span_of(file, &c.cond_expr),
                ))),
            },
            Expression::FuncCall(call) => {
                let name = call.name.name.as_str();
                let args = call
                    .args
                    .iter()
                    .map(|a| self.eval_in(file, a, scope))
                    .collect::<Eval<Vec<_>>>()?;
                if let Some(hint) = functions::suggest(name) {
                    return Err(Some(
                        Diagnostic::new(format!("unknown function `{name}`"), span).with_hint(hint),
                    ));
                }
                functions::call(self, name, args).map_err(|message| {
                    Some(Diagnostic::new(
                        format!("in call to `{name}`: {message}"),
                        span,
                    ))
                })
            }
            Expression::Traversal(t) => self.traversal(file, t, scope, span),
            Expression::UnaryOp(op) => {
                let value = self.eval_in(file, &op.expr, scope)?;
                match (op.operator.value(), value) {
                    (UnaryOperator::Neg, Value::Number(n)) => Ok(Value::Number(-n)),
                    (UnaryOperator::Not, Value::Bool(b)) => Ok(Value::Bool(!b)),
                    (op, v) => fail(format!("cannot apply `{op:?}` to {}", type_name(&v))),
                }
            }
            Expression::BinaryOp(op) => self.binary_chain(file, op, scope, span),
            Expression::ForExpr(f) => self.for_expr(file, f, scope, span),
        }
    }

    /// `hcl-edit` parses `a || b == c` as a chain nested to the right, without operator
    /// precedence (hcl-rs fixes that up after parsing; this evaluator reads hcl-edit's
    /// tree). The chain is flattened and evaluated with HCL's precedence, left to right.
    fn binary_chain(
        &self,
        file: FileId,
        op: &hcl_edit::expr::BinaryOp,
        scope: &Scope,
        span: Option<Span>,
    ) -> Eval<Value> {
        let mut operands = vec![&op.lhs_expr];
        let mut operators = vec![*op.operator.value()];
        let mut rest = &op.rhs_expr;
        while let Expression::BinaryOp(next) = rest {
            operands.push(&next.lhs_expr);
            operators.push(*next.operator.value());
            rest = &next.rhs_expr;
        }
        operands.push(rest);
        let mut values = Vec::with_capacity(operands.len());
        for operand in operands {
            values.push(self.eval_in(file, operand, scope)?);
        }
        let fail = |m: String| Some(Diagnostic::new(m, span.clone()));
        let mut values = values.into_iter();
        let mut stack = vec![values.next().expect("a chain has operands")];
        let mut pending: Vec<BinaryOperator> = Vec::new();
        let reduce = |stack: &mut Vec<Value>, op: BinaryOperator| -> Eval<()> {
            let rhs = stack.pop().expect("two operands");
            let lhs = stack.pop().expect("two operands");
            stack.push(binary(op, lhs, rhs).map_err(fail)?);
            Ok(())
        };
        for (op, value) in operators.into_iter().zip(values) {
            while let Some(top) = pending.last() {
                if precedence(*top) < precedence(op) {
                    break;
                }
                let top = pending.pop().expect("peeked");
                reduce(&mut stack, top)?;
            }
            pending.push(op);
            stack.push(value);
        }
        while let Some(top) = pending.pop() {
            reduce(&mut stack, top)?;
        }
        Ok(stack.pop().expect("one result"))
    }

    fn root(&self, name: &str, scope: &Scope, span: Option<Span>) -> Eval<Value> {
        if let Some(value) = scope.get(name) {
            return Ok(value.clone());
        }
        match name {
            "var" => Ok(Value::Object(self.vars.clone())),
            // The release being rolled out is only known at launch: its attributes
            // evaluate to markers that the engine fills in then.
            "release" => Ok(Value::Object(
                super::model::RELEASE_REFERENCES
                    .iter()
                    .map(|n| (n.to_string(), Value::String(format!("${{release.{n}}}"))))
                    .collect(),
            )),
            "local" | "module" | "fleet" => Err(Some(Diagnostic::new(
                format!("`{name}` must be followed by a name, as in `{name}.NAME`"),
                span,
            ))),
            _ => Err(Some(
                Diagnostic::new(format!("unknown name `{name}`"), span).with_hint(
                    "references start with `var.`, `local.`, `module.`, `fleet.` or `release.`",
                ),
            )),
        }
    }

    fn traversal(
        &self,
        file: FileId,
        t: &hcl_edit::expr::Traversal,
        scope: &Scope,
        span: Option<Span>,
    ) -> Eval<Value> {
        let mut operators = t.operators.iter().peekable();
        let mut value = match (&t.expr, operators.peek().map(|o| o.value())) {
            (Expression::Variable(root), Some(TraversalOperator::GetAttr(attr)))
                if scope.get(root.as_str()).is_none()
                    && matches!(root.as_str(), "var" | "local" | "module" | "fleet") =>
            {
                let attr_span = span_of_attr(file, operators.next().expect("peeked"));
                let at = attr_span.or(span.clone());
                match root.as_str() {
                    "var" => self.variable(attr.as_str(), at)?,
                    "local" => self.local(attr.as_str(), at)?,
                    "fleet" => self.fleet(attr.as_str(), at)?,
                    _ => {
                        let module = self.module(attr.as_str(), at)?;
                        if let Some(op) = operators.peek() {
                            if let TraversalOperator::GetAttr(output) = op.value() {
                                let output = output.as_str();
                                let known = module.outputs.contains_key(output)
                                    || module.unknown.iter().any(|u| u == output);
                                if !known {
                                    let names: Vec<&str> = module
                                        .outputs
                                        .keys()
                                        .map(String::as_str)
                                        .chain(module.unknown.iter().map(String::as_str))
                                        .collect();
                                    let d = Diagnostic::new(
                                        format!(
                                            "module `{}` has no output `{output}`",
                                            attr.as_str()
                                        ),
                                        span_of_attr(file, op),
                                    );
                                    return Err(Some(match did_you_mean(output, &names) {
                                        Some(n) => d.with_hint(format!("did you mean `{n}`?")),
                                        None if names.is_empty() => {
                                            d.with_hint("the module declares no outputs")
                                        }
                                        None => d.with_hint(format!(
                                            "the module's outputs are: {}",
                                            names.join(", ")
                                        )),
                                    }));
                                }
                            }
                        }
                        if let Some(TraversalOperator::GetAttr(output)) =
                            operators.peek().map(|o| o.value())
                        {
                            if module.sensitive.iter().any(|s| s == output.as_str()) {
                                self.touched_sensitive.set(true);
                            }
                            if module.unknown.iter().any(|s| s == output.as_str()) {
                                return Err(None);
                            }
                        }
                        Value::Object(module.outputs)
                    }
                }
            }
            _ => self.eval_in(file, &t.expr, scope)?,
        };
        for op in operators {
            let op_span = span_of_attr(file, op).or(span.clone());
            value = match op.value() {
                TraversalOperator::GetAttr(attr) => match value {
                    Value::Object(mut map) => match map.swap_remove(attr.as_str()) {
                        Some(v) => v,
                        None => {
                            let keys: Vec<&str> = map.keys().map(String::as_str).collect();
                            let d = Diagnostic::new(
                                format!("object has no attribute `{}`", attr.as_str()),
                                op_span,
                            );
                            return Err(Some(match did_you_mean(attr.as_str(), &keys) {
                                Some(k) => d.with_hint(format!("did you mean `{k}`?")),
                                None => d,
                            }));
                        }
                    },
                    other => {
                        return Err(Some(Diagnostic::new(
                            format!(
                                "cannot read attribute `{}` of {}",
                                attr.as_str(),
                                type_name(&other)
                            ),
                            op_span,
                        )))
                    }
                },
                TraversalOperator::Index(index) => {
                    let key = self.eval_in(file, index, scope)?;
                    index_value(value, &key).map_err(|m| Some(Diagnostic::new(m, op_span)))?
                }
                TraversalOperator::LegacyIndex(i) => {
                    let key = Value::Number(Number::from(*i.value()));
                    index_value(value, &key).map_err(|m| Some(Diagnostic::new(m, op_span)))?
                }
                TraversalOperator::AttrSplat(_) | TraversalOperator::FullSplat(_) => {
                    return Err(Some(Diagnostic::new(
                        "splat expressions (`[*]`) are not supported; use a `for` expression",
                        op_span,
                    )))
                }
            };
        }
        Ok(value)
    }

    fn variable(&self, name: &str, span: Option<Span>) -> Eval<Value> {
        if self.sensitive_vars.iter().any(|s| s == name) {
            self.touched_sensitive.set(true);
        }
        self.touched_vars.borrow_mut().insert(name.to_string());
        match self.vars.get(name) {
            Some(value) => Ok(value.clone()),
            None if self.declared.iter().any(|d| d == name) => Err(None),
            None => {
                let names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
                let d = Diagnostic::new(format!("undefined variable `{name}`"), span);
                Err(Some(match did_you_mean(name, &names) {
                    Some(n) => d.with_hint(format!("did you mean `var.{n}`?")),
                    None => d.with_hint(format!("declare it with `variable \"{name}\" {{}}`")),
                }))
            }
        }
    }

    fn local(&self, name: &str, span: Option<Span>) -> Eval<Value> {
        if let Some(known) = self.local_values.borrow().get(name) {
            let (value, trace) = known.clone().ok_or(None)?;
            if trace.sensitive {
                self.touched_sensitive.set(true);
            }
            self.touched_vars.borrow_mut().extend(trace.vars);
            return Ok(value);
        }
        let Some(local) = self.locals.get(name) else {
            let names: Vec<&str> = self.locals.keys().map(String::as_str).collect();
            let d = Diagnostic::new(format!("undefined local value `{name}`"), span);
            return Err(Some(match did_you_mean(name, &names) {
                Some(n) => d.with_hint(format!("did you mean `local.{n}`?")),
                None => d,
            }));
        };
        if self.in_progress.borrow().iter().any(|n| n == name) {
            let mut chain = self.in_progress.borrow().clone();
            chain.push(name.to_string());
            return Err(Some(Diagnostic::new(
                format!(
                    "local values refer to each other in a cycle: {}",
                    chain.join(" -> ")
                ),
                span,
            )));
        }
        self.in_progress.borrow_mut().push(name.to_string());
        let (result, trace) = self.eval_traced(local.file, local.expr);
        self.in_progress.borrow_mut().pop();
        let stored = match result {
            Ok(v) => Some((v, trace)),
            Err(Some(d)) => {
                self.local_errors.borrow_mut().push(d);
                None
            }
            Err(None) => None,
        };
        self.local_values
            .borrow_mut()
            .insert(name.to_string(), stored.clone());
        stored.map(|(v, _)| v).ok_or(None)
    }

    fn fleet(&self, name: &str, span: Option<Span>) -> Eval<Value> {
        let fleets = self.fleet_values.borrow();
        let Some(fleets) = fleets.as_ref() else {
            return Err(Some(
                Diagnostic::new(format!("`fleet.{name}` can only be used in outputs"), span)
                    .with_hint("a fleet's attributes are known once every fleet is read; use a local or variable for values fleets share"),
            ));
        };
        match fleets.get(name) {
            Some(value) => Ok(value.clone()),
            None => {
                let names: Vec<&str> = fleets.keys().map(String::as_str).collect();
                let d = Diagnostic::new(format!("undefined fleet `{name}`"), span);
                Err(Some(match did_you_mean(name, &names) {
                    Some(n) => d.with_hint(format!("did you mean `fleet.{n}`?")),
                    None => d,
                }))
            }
        }
    }

    fn module(&self, name: &str, span: Option<Span>) -> Eval<ModuleValue> {
        if let Some(known) = self.module_values.borrow().get(name) {
            return known.clone().ok_or(None);
        }
        let Some(call) = self.calls.get(name) else {
            let names: Vec<&str> = self.calls.keys().map(String::as_str).collect();
            let d = Diagnostic::new(format!("undefined module `{name}`"), span);
            return Err(Some(match did_you_mean(name, &names) {
                Some(n) => d.with_hint(format!("did you mean `module.{n}`?")),
                None => d.with_hint(format!(
                    "declare it with `module \"{name}\" {{ source = \"./modules/...\" }}`"
                )),
            }));
        };
        let key = format!("module.{name}");
        if self.in_progress.borrow().contains(&key) {
            let mut chain = self.in_progress.borrow().clone();
            chain.push(key);
            return Err(Some(Diagnostic::new(
                format!(
                    "values refer to each other in a cycle: {}",
                    chain.join(" -> ")
                ),
                span,
            )));
        }
        self.in_progress.borrow_mut().push(key);
        let value = super::module::instantiate(self, name, call);
        self.in_progress.borrow_mut().pop();
        self.module_values
            .borrow_mut()
            .insert(name.to_string(), value.clone());
        value.ok_or(None)
    }

    /// The outputs of a module call once instantiated; `Some(None)` when it failed.
    pub fn module_value(&self, name: &str) -> Option<Option<ModuleValue>> {
        self.module_values.borrow().get(name).cloned()
    }

    /// Instantiates every module not referenced yet, so that their fleets and problems
    /// are part of the configuration.
    pub fn instantiate_all(&self) {
        let mut names: Vec<&String> = self.calls.keys().collect();
        names.sort();
        for name in names {
            if let Err(Some(d)) = self.module(name, None) {
                self.local_errors.borrow_mut().push(d);
            }
        }
    }

    /// Reads a file relative to this unit's directory (for `file` and `templatefile`).
    pub fn read_file(&self, path: &str) -> Result<String, String> {
        let full = super::files::normalize(&self.base_dir.join(path));
        let bytes = self
            .program
            .files
            .read(&full, super::files::MAX_FILE_BYTES)
            .map_err(|e| format!("cannot read {}: {e}", full.display()))?;
        String::from_utf8(bytes).map_err(|_| format!("{} is not valid UTF-8 text", full.display()))
    }

    fn template(&self, file: FileId, template: &Template, scope: &Scope) -> Eval<Value> {
        let mut out = String::new();
        for element in template.iter() {
            match element {
                Element::Literal(text) => out.push_str(text.value()),
                Element::Interpolation(i) => {
                    let value = self.eval_in(file, &i.expr, scope)?;
                    out.push_str(&to_template_string(&value).map_err(|m| {
                        Some(Diagnostic::new(m, span_of(file, &i.expr)))
                    })?);
                }
                Element::Directive(d) => {
                    return Err(Some(Diagnostic::new(
                        "template directives (`%{ if }`, `%{ for }`) are not supported; use a conditional or `for` expression inside `${ }`",
                        d.span().map(|range| Span { file, range }),
                    )))
                }
            }
        }
        Ok(Value::String(out))
    }

    fn for_expr(
        &self,
        file: FileId,
        f: &hcl_edit::expr::ForExpr,
        scope: &Scope,
        span: Option<Span>,
    ) -> Eval<Value> {
        let collection = self.eval_in(file, &f.intro.collection_expr, scope)?;
        let items: Vec<(Value, Value)> = match collection {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (Value::from(i as u64), v))
                .collect(),
            Value::Object(map) => map
                .into_iter()
                .map(|(k, v)| (Value::String(k), v))
                .collect(),
            other => {
                return Err(Some(Diagnostic::new(
                    format!("cannot iterate over {}", type_name(&other)),
                    span_of(file, &f.intro.collection_expr),
                )))
            }
        };
        let mut array = Vec::new();
        let mut object = Map::new();
        for (key, value) in items {
            let mut names = vec![(f.intro.value_var.as_str().to_string(), value)];
            if let Some(k) = &f.intro.key_var {
                names.push((k.as_str().to_string(), key));
            }
            let inner = scope.child(names);
            if let Some(cond) = &f.cond {
                match self.eval_in(file, &cond.expr, &inner)? {
                    Value::Bool(true) => {}
                    Value::Bool(false) => continue,
                    other => {
                        return Err(Some(Diagnostic::new(
                            format!("`if` condition must be a bool, found {}", type_name(&other)),
                            span_of(file, &cond.expr),
                        )))
                    }
                }
            }
            let value = self.eval_in(file, &f.value_expr, &inner)?;
            match &f.key_expr {
                None => array.push(value),
                Some(key_expr) => {
                    let key = match self.eval_in(file, key_expr, &inner)? {
                        Value::String(s) => s,
                        other => to_template_string(&other)
                            .map_err(|m| Some(Diagnostic::new(m, span.clone())))?,
                    };
                    if f.grouping {
                        match object
                            .entry(key)
                            .or_insert_with(|| Value::Array(Vec::new()))
                        {
                            Value::Array(group) => group.push(value),
                            _ => unreachable!("grouped values are always arrays"),
                        }
                    } else if object.insert(key.clone(), value).is_some() {
                        return Err(Some(Diagnostic::new(
                            format!("duplicate key `{key}` in `for` expression; use `...` to group values"),
                            span,
                        )));
                    }
                }
            }
        }
        Ok(if f.key_expr.is_some() {
            Value::Object(object)
        } else {
            Value::Array(array)
        })
    }

    /// Evaluates a template file's text with the given variables (for `templatefile`).
    pub fn eval_template_text(
        &self,
        text: &str,
        vars: Map<String, Value>,
    ) -> Result<String, String> {
        super::guard::check(text).map_err(|(message, _)| format!("template {message}"))?;
        let template = hcl_edit::parser::parse_template(text)
            .map_err(|e| format!("template syntax error: {}", e.message()))?;
        let scope = Scope::with(vars.into_iter().collect());
        // A template file is not one of the configuration's sources: spans into it would
        // point into the wrong file, so errors carry the message only.
        let file = FileId::detached();
        match self.template(file, &template, &scope) {
            Ok(Value::String(s)) => Ok(s),
            Ok(_) => unreachable!("templates produce strings"),
            Err(Some(d)) => Err(d.summary),
            Err(None) => Err("a local value it uses is invalid".into()),
        }
    }
}

pub fn span_of(file: FileId, node: &impl hcl_edit::Span) -> Option<Span> {
    node.span().map(|range| Span { file, range })
}

/// The name after the dot for `.name`, so the caret sits under the name alone.
fn span_of_attr(file: FileId, op: &hcl_edit::Decorated<TraversalOperator>) -> Option<Span> {
    let inner = match op.value() {
        TraversalOperator::GetAttr(ident) => ident.span(),
        _ => None,
    };
    inner
        .or_else(|| op.span())
        .or_else(|| op.value().span())
        .map(|range| Span { file, range })
}

pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

pub fn to_template_string(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!(
            "cannot use {} in a string template; only strings, numbers and bools",
            type_name(other)
        )),
    }
}

fn index_value(value: Value, key: &Value) -> Result<Value, String> {
    match (value, key) {
        (Value::Array(items), Value::Number(n)) => {
            let len = items.len();
            n.as_u64()
                .and_then(|i| items.into_iter().nth(i as usize))
                .ok_or_else(|| format!("index {n} is out of range for a list of {len}"))
        }
        (Value::Object(mut map), Value::String(k)) => map
            .swap_remove(k)
            .ok_or_else(|| format!("object has no key `{k}`")),
        (v, k) => Err(format!(
            "cannot index {} with {}",
            type_name(&v),
            type_name(k)
        )),
    }
}

/// HCL's operator precedence, higher binds tighter.
fn precedence(op: BinaryOperator) -> u8 {
    use BinaryOperator::*;
    match op {
        Mul | Div | Mod => 6,
        Plus | Minus => 5,
        Less | LessEq | Greater | GreaterEq => 4,
        Eq | NotEq => 3,
        And => 2,
        Or => 1,
    }
}

fn binary(op: BinaryOperator, lhs: Value, rhs: Value) -> Result<Value, String> {
    use BinaryOperator::*;
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| "number out of range".to_string()),
        other => Err(format!("expected a number, found {}", type_name(other))),
    };
    let num = |f: f64| {
        Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| "arithmetic result is not a finite number".to_string())
    };
    match op {
        Eq => Ok(Value::Bool(lhs == rhs)),
        NotEq => Ok(Value::Bool(lhs != rhs)),
        And | Or => match (lhs, rhs) {
            (Value::Bool(a), Value::Bool(b)) => {
                Ok(Value::Bool(if op == And { a && b } else { a || b }))
            }
            (a, b) => Err(format!(
                "`&&` and `||` need bools, found {} and {}",
                type_name(&a),
                type_name(&b)
            )),
        },
        Less => Ok(Value::Bool(number(&lhs)? < number(&rhs)?)),
        LessEq => Ok(Value::Bool(number(&lhs)? <= number(&rhs)?)),
        Greater => Ok(Value::Bool(number(&lhs)? > number(&rhs)?)),
        GreaterEq => Ok(Value::Bool(number(&lhs)? >= number(&rhs)?)),
        Plus | Minus | Mul | Div | Mod => {
            if let (Value::Number(a), Value::Number(b)) = (&lhs, &rhs) {
                // Integer arithmetic stays exact where both sides are integers.
                if let (Some(a), Some(b)) = (a.as_i64(), b.as_i64()) {
                    let exact = match op {
                        Plus => a.checked_add(b),
                        Minus => a.checked_sub(b),
                        Mul => a.checked_mul(b),
                        Mod if b != 0 => a.checked_rem(b),
                        Div if b != 0 && a % b == 0 => a.checked_div(b),
                        _ => None,
                    };
                    if let Some(v) = exact {
                        return Ok(Value::from(v));
                    }
                }
            }
            let (a, b) = (number(&lhs)?, number(&rhs)?);
            if matches!(op, Div | Mod) && b == 0.0 {
                return Err("division by zero".into());
            }
            num(match op {
                Plus => a + b,
                Minus => a - b,
                Mul => a * b,
                Div => a / b,
                _ => a % b,
            })
        }
    }
}
