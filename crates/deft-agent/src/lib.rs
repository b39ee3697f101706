//! The agent (SPEC §2 work steps, §5 tools). Today: the tools, with exactly the names and
//! arguments of SPEC §5, each a function from a model's tool call to a tool result. The loop
//! that plans, executes and verifies with them comes next.

pub mod tools;

pub use tools::{Effect, ToolOutput, Tools, specs};
