//! cram: train language models from scratch under a fixed compute budget.
//!
//! The library holds all the logic; `src/main.rs` only parses the command line.
//! See DESIGN.md for the map of the modules.

pub mod backend;
pub mod cli;
pub mod config;
pub mod data;
pub mod eval;
pub mod export;
pub mod fsio;
pub mod launch;
pub mod model;
pub mod optim;
pub mod parallel;
pub mod random;
pub mod report;
pub mod scaling;
pub mod train;
