//! The suite's parts: fetch, policy and search, with the servers they share.

mod fetch;
mod policy;
mod search;
mod support;
