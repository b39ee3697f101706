//! The launcher and init verbs of `deft_sandbox::inner` as a small program of their own, for
//! this crate's tests and benchmark (the `deft` binary answers the same verbs in production).

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some(deft_sandbox::inner::LAUNCH) => {
            let error = deft_sandbox::inner::launch(&args[2..]);
            report(&error.to_string());
            std::process::exit(125);
        }
        Some(deft_sandbox::inner::INIT) => {
            std::process::exit(deft_sandbox::inner::init(&args[2..]))
        }
        _ => {
            report("this helper is started by deft's sandbox only");
            std::process::exit(2);
        }
    }
}

#[allow(clippy::print_stderr, reason = "the helper's one diagnostic")]
fn report(message: &str) {
    eprintln!("deft-container-helper: {message}");
}
