//! The launcher and init of [`deft_sandbox::inner`] as a small program of their own, for this
//! crate's tests (the `deft` binary answers the same verbs in production).

fn main() {
    deft_sandbox::inner::helper_main("deft-sandbox-helper")
}
