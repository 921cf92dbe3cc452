//! The `feeder` binary's library: command-line contract, wiring of the stages, and the
//! one-command demo. Each stage's logic lives in its own crate (`feeder-edge`,
//! `feeder-stream`, `feeder-writer`); this crate only parses settings, starts them, and
//! stops them in order.

pub mod arg_parsers;
pub mod attacks;
pub mod cli;
pub mod commands;
pub mod config_file;
pub mod demo;
pub mod edge_key;
pub mod group_watch;
pub mod http;
pub mod pipeline;
pub mod registry_publish;
pub mod shutdown;
mod stage_runtime;
pub mod telemetry;
pub mod writer_storage;
