//! The seccomp filter every sandboxed command runs under: system calls a build or a test never
//! needs and an attacker would like are refused with `EPERM`.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// Builds the filters for this machine's architecture, to be applied in order.
pub fn filters() -> Result<Vec<BpfProgram>, String> {
    Ok(vec![no_x32(), refusals()?, no_clone3()?])
}

/// The x32 system calls of x86-64 carry bit 30 in their number and the x86-64 architecture
/// token, so they match no rule written for the plain numbers: every one is refused, first.
/// (No other architecture numbers a system call that high.)
fn no_x32() -> BpfProgram {
    let op = |code: u32, jt: u8, jf: u8, k: u32| seccompiler::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    vec![
        // The system call's number is the first word of `seccomp_data`.
        op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        op(
            libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
            1,
            0,
            0x4000_0000,
        ),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        op(
            libc::BPF_RET | libc::BPF_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
    ]
}

fn arch() -> Result<seccompiler::TargetArch, String> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|_| format!("no seccomp filter for {}", std::env::consts::ARCH))
}

/// `clone3` passes its flags in memory, where a filter cannot look, so it is refused as if the
/// kernel lacked it; the C library then falls back to `clone`, whose flags the other filter
/// checks.
fn no_clone3() -> Result<BpfProgram, String> {
    let rules: BTreeMap<i64, Vec<SeccompRule>> = [(libc::SYS_clone3, Vec::new())].into();
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )
    .map_err(|e| e.to_string())?
    .try_into()
    .map_err(|e: seccompiler::BackendError| e.to_string())
}

fn refusals() -> Result<BpfProgram, String> {
    let arch = arch()?;
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
    // Sockets of the internet families (reaching only the proxy's bridge, the network
    // namespace having nothing else) and netlink (the C library asks it for addresses); no
    // other family: a unix socket could reach a host socket passed in, and AF_VSOCK ignores
    // network namespaces and reaches the virtual machine's host.
    let other_family = |family: i32| {
        SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, family as u64)
            .map_err(|e| e.to_string())
    };
    rules.insert(
        libc::SYS_socket,
        vec![
            SeccompRule::new(vec![
                other_family(libc::AF_INET)?,
                other_family(libc::AF_INET6)?,
                other_family(libc::AF_NETLINK)?,
            ])
            .map_err(|e| e.to_string())?,
        ],
    );
    // No user namespace inside the sandbox's: one would give a command every capability over
    // namespaces of its own, the kernel attack surface the sandbox exists to keep away.
    let new_user = || {
        SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(libc::CLONE_NEWUSER as u64),
            libc::CLONE_NEWUSER as u64,
        )
        .and_then(|condition| SeccompRule::new(vec![condition]))
        .map_err(|e| e.to_string())
    };
    rules.insert(libc::SYS_unshare, vec![new_user()?]);
    rules.insert(libc::SYS_clone, vec![new_user()?]);
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
        let programs = super::filters().unwrap();
        assert_eq!(programs.len(), 3);
        assert!(programs.iter().all(|program| !program.is_empty()));
    }
}
