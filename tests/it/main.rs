//! Integration tests: the `immune` binary against LocalStack, checked through the AWS SDK.
//! One binary, themed modules; the harness starts LocalStack once when it is not running.

mod harness;

mod backends;
mod bad_input;
mod ci;
mod config_cli;
mod crash;
mod faults;
mod gates;
mod immune;
mod interrupt;
mod irreversible;
mod locks;
mod notify;
mod order;
mod ownership;
mod pace;
mod plans;
mod production;
mod promotion;
mod quality;
mod real_aws;
mod release;
mod scale;
mod schema;
mod workers;
