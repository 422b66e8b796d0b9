//! The built-in functions, with Terraform's names and semantics where they overlap.

use super::eval::{to_template_string, type_name, Evaluator};
use hcl::{Map, Number, Value};

pub const NAMES: &[&str] = &[
    "concat",
    "file",
    "format",
    "join",
    "jsonencode",
    "length",
    "lookup",
    "lower",
    "merge",
    "replace",
    "templatefile",
    "tonumber",
    "tostring",
    "upper",
];

/// A hint for a call to an unknown function.
pub fn suggest(name: &str) -> Option<String> {
    if NAMES.contains(&name) {
        return None;
    }
    Some(match super::diagnostic::did_you_mean(name, NAMES) {
        Some(n) => format!("did you mean `{n}`?"),
        None => format!("the functions are: {}", NAMES.join(", ")),
    })
}

pub fn call(eval: &Evaluator, name: &str, args: Vec<Value>) -> Result<Value, String> {
    match name {
        "file" => {
            let [path] = arity(args)?;
            eval.read_file(&string(&path)?).map(Value::String)
        }
        "templatefile" => {
            let [path, vars] = arity(args)?;
            let text = eval.read_file(&string(&path)?)?;
            let Value::Object(vars) = vars else {
                return Err(format!(
                    "the second argument must be an object of variables, found {}",
                    type_name(&vars)
                ));
            };
            eval.eval_template_text(&text, vars).map(Value::String)
        }
        "format" => format(args),
        "join" => {
            let [sep, list] = arity(args)?;
            let parts = list_of(&list)?
                .iter()
                .map(to_template_string)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Value::String(parts.join(&string(&sep)?)))
        }
        "lookup" => {
            let (map, key, default) = match <[Value; 3]>::try_from(args) {
                Ok([m, k, d]) => (m, k, Some(d)),
                Err(args) => {
                    let [m, k] = arity(args)?;
                    (m, k, None)
                }
            };
            let key = string(&key)?;
            match (object(&map)?.get(&key), default) {
                (Some(v), _) => Ok(v.clone()),
                (None, Some(d)) => Ok(d),
                (None, None) => Err(format!("key `{key}` not found and no default given")),
            }
        }
        "merge" => {
            let mut out = Map::new();
            for arg in &args {
                for (k, v) in object(arg)? {
                    out.insert(k.clone(), v.clone());
                }
            }
            Ok(Value::Object(out))
        }
        "concat" => {
            let mut out = Vec::new();
            for arg in &args {
                out.extend(list_of(arg)?.iter().cloned());
            }
            Ok(Value::Array(out))
        }
        "length" => {
            let [v] = arity(args)?;
            let n = match &v {
                Value::String(s) => s.chars().count(),
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                other => return Err(format!("cannot take the length of {}", type_name(other))),
            };
            Ok(Value::from(n as u64))
        }
        "upper" | "lower" => {
            let [v] = arity(args)?;
            let s = string(&v)?;
            Ok(Value::String(if name == "upper" {
                s.to_uppercase()
            } else {
                s.to_lowercase()
            }))
        }
        "replace" => {
            let [s, from, to] = arity(args)?;
            Ok(Value::String(
                string(&s)?.replace(&string(&from)?, &string(&to)?),
            ))
        }
        "tostring" => {
            let [v] = arity(args)?;
            match v {
                Value::Null => Ok(Value::Null),
                v => to_template_string(&v).map(Value::String),
            }
        }
        "tonumber" => {
            let [v] = arity(args)?;
            match v {
                Value::Number(_) | Value::Null => Ok(v),
                Value::String(s) => parse_number(&s)
                    .map(Value::Number)
                    .ok_or_else(|| format!("cannot convert \"{s}\" to a number")),
                other => Err(format!("cannot convert {} to a number", type_name(&other))),
            }
        }
        "jsonencode" => {
            let [v] = arity(args)?;
            serde_json::to_string(&v)
                .map(Value::String)
                .map_err(|e| e.to_string())
        }
        _ => Err(format!("unknown function `{name}`")),
    }
}

pub fn parse_number(s: &str) -> Option<Number> {
    let s = s.trim();
    s.parse::<i64>()
        .map(Number::from)
        .ok()
        .or_else(|| s.parse::<f64>().ok().and_then(Number::from_f64))
}

fn arity<const N: usize>(args: Vec<Value>) -> Result<[Value; N], String> {
    let given = args.len();
    <[Value; N]>::try_from(args).map_err(|_| {
        format!(
            "expects {N} argument{}, got {given}",
            if N == 1 { "" } else { "s" }
        )
    })
}

fn string(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(_) | Value::Bool(_) => to_template_string(v),
        other => Err(format!("expected a string, found {}", type_name(other))),
    }
}

fn list_of(v: &Value) -> Result<&Vec<Value>, String> {
    match v {
        Value::Array(a) => Ok(a),
        other => Err(format!("expected a list, found {}", type_name(other))),
    }
}

fn object(v: &Value) -> Result<&Map<String, Value>, String> {
    match v {
        Value::Object(o) => Ok(o),
        other => Err(format!("expected an object, found {}", type_name(other))),
    }
}

/// Terraform's `format` for the verbs operators use: `%s`, `%d`, `%v` and `%%`.
fn format(args: Vec<Value>) -> Result<Value, String> {
    let mut args = args.into_iter();
    let spec = string(&args.next().ok_or("expects a format string")?)?;
    let mut out = String::new();
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(verb @ ('s' | 'd' | 'v')) => {
                let arg = args
                    .next()
                    .ok_or_else(|| format!("not enough arguments for `%{verb}`"))?;
                if verb == 'd' && !matches!(arg, Value::Number(_)) {
                    return Err(format!("`%d` needs a number, found {}", type_name(&arg)));
                }
                out.push_str(&to_template_string(&arg)?);
            }
            Some(other) => return Err(format!("unsupported format verb `%{other}`")),
            None => return Err("format string ends with `%`".into()),
        }
    }
    if args.next().is_some() {
        return Err("too many arguments for the format string".into());
    }
    Ok(Value::String(out))
}
