mod fetch;
mod policy;
mod search;
mod support;
