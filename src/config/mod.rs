//! The configuration language: HCL files -> typed [`Config`], with diagnostics that point
//! at file, line and column.

mod diagnostic;
mod eval;
mod functions;
mod load;
mod model;
mod reader;
mod source;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use load::{load, ConfigError, VarInputs};
pub use model::*;
pub use source::{Sources, Span};

#[cfg(test)]
mod tests;
