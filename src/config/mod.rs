//! The configuration language: HCL files -> typed [`Config`], with diagnostics that point
//! at file, line and column.

pub mod aws_names;
mod diagnostic;
mod eval;
mod files;
mod fleet;
pub mod format;
mod functions;
mod guard;
mod load;
mod model;
mod module;
pub mod names;
mod notify;
mod reader;
mod source;
mod variables;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use load::{load, load_sources, load_with, ConfigError, Mode, VarInputs};
pub use model::*;
pub use notify::topic_region;
pub use source::{Sources, Span};

#[cfg(test)]
mod suite;
#[cfg(test)]
mod tests;
