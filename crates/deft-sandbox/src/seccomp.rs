//! The seccomp filter every sandboxed command runs under: system calls a build or a test never
//! needs and an attacker would like are refused with `EPERM`.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// Builds the filter for this machine's architecture.
pub fn filter() -> Result<BpfProgram, String> {
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|_| format!("no seccomp filter for {}", std::env::consts::ARCH))?;
    let always = |rules: &mut BTreeMap<i64, Vec<SeccompRule>>, syscall: libc::c_long| {
        rules.insert(syscall, Vec::new());
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    // io_uring bypasses the other rules; ptrace and cross-process memory reach other processes;
    // the keyring, bpf and perf are kernel attack surface no build uses.
    for syscall in [
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_kexec_load,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_keyctl,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
    ] {
        always(&mut rules, syscall);
    }
    let condition = |arg: u8, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
            .map_err(|e| e.to_string())
    };
    // TIOCSTI pushes input into a terminal: the classic sandbox escape through a shared tty.
    rules.insert(
        libc::SYS_ioctl,
        vec![SeccompRule::new(vec![condition(1, libc::TIOCSTI)?]).map_err(|e| e.to_string())?],
    );
    // No new unix sockets: the only one a command may use is the proxy's, reached over TCP.
    rules.insert(
        libc::SYS_socket,
        vec![
            SeccompRule::new(vec![condition(0, libc::AF_UNIX as u64)?])
                .map_err(|e| e.to_string())?,
        ],
    );
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_filter_builds_for_this_machine() {
        let program = super::filter().unwrap();
        assert!(!program.is_empty());
    }
}
