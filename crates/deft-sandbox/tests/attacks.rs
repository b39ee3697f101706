//! The attack suite on the host's root: the system directories of the machine deft runs on.

#[path = "attacks/suite.rs"]
mod suite;

fn root() -> Option<deft_sandbox::ImageRoot> {
    None
}
