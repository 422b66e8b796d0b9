//! immune: a plan/apply provisioner for immutable VM fleets on AWS, with canary rollouts
//! gated on CloudWatch and automatic rollback.

pub mod bake;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod engine;
pub mod notify;
pub mod outputs;
pub mod plan;
pub mod quality;
pub mod rollout;
pub mod state;
pub mod terminal;
