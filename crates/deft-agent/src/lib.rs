//! The agent (SPEC §2 work steps, §5 tools): the tools, with exactly the names and arguments
//! of SPEC §5, and the engine that takes a task through analysis, planning, verified
//! execution and completion with them.

pub mod analysis;
mod blocks;
pub mod chat;
pub mod context;
pub mod devcontainer;
pub mod engine;
pub mod files;
pub mod forge;
mod history;
pub mod housekeeping;
pub mod install;
pub mod loops;
pub mod mcp;
mod named;
mod notes;
pub mod outgoing;
mod prompts;
mod questions;
pub mod setup;
mod task_commands;
pub mod tools;
mod unsourced;
pub mod web;
pub mod workspaces;

pub use engine::{Engine, EngineError, RunLimits, RunOutcome};
pub use tools::{Effect, ToolOutput, Tools, specs};
