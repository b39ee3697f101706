//! How many tasks one deft process runs at once when `--workers` is not given. A task spends
//! most of its life waiting on the model, so the cap is set by what the machine can hold when
//! many of them run commands at once, never below the per-user limit's default of 10.

/// The fewest tasks run at once by default: the per-user limit, so one user's burst shows.
pub const FLOOR: usize = 10;
/// Memory set aside for each running task: its sandbox's commands, the engine's state, and
/// the clone's page cache (docs/PERFORMANCE.md has what an idle running task measures).
pub const MEMORY_PER_TASK: u64 = 512 * 1024 * 1024;
/// Running tasks per core: most of them wait on the model at any moment.
pub const TASKS_PER_CORE: usize = 8;

/// The default cap on this machine.
pub fn machine_default() -> usize {
    cap(memory_total(), cores())
}

/// The cap for a machine of `memory` bytes (when known) and `cores` cores.
pub fn cap(memory: Option<u64>, cores: usize) -> usize {
    let by_cpu = cores.saturating_mul(TASKS_PER_CORE);
    let by_memory = memory.map_or(usize::MAX, |bytes| {
        usize::try_from(bytes / MEMORY_PER_TASK).unwrap_or(usize::MAX)
    });
    by_cpu.min(by_memory).max(FLOOR)
}

/// Why the default is what it is, for the line `deft serve` prints at start.
pub fn explain(capacity: usize) -> String {
    let memory = memory_total()
        .map(|bytes| format!("{} MiB", bytes / (1024 * 1024)))
        .unwrap_or_else(|| "unknown memory".to_owned());
    format!(
        "{capacity} from {} cores and {memory}: {TASKS_PER_CORE} a core, {} MiB each, at least {FLOOR}; `--workers N` sets it",
        cores(),
        MEMORY_PER_TASK / (1024 * 1024)
    )
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The machine's memory, or the cgroup's limit when deft runs in a smaller one.
fn memory_total() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?
        * 1024;
    let limit = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    Some(limit.map_or(total, |limit| limit.min(total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * 1024 * 1024;

    #[test]
    fn the_cap_follows_the_smaller_of_cores_and_memory_and_never_drops_below_ten() {
        // This project's machines: 2 cores, 24 GiB.
        assert_eq!(cap(Some(24 * GIB), 2), 16);
        // A large server is held by its memory.
        assert_eq!(cap(Some(16 * GIB), 64), 32);
        // A small one still runs one user's ten.
        assert_eq!(cap(Some(2 * GIB), 1), FLOOR);
        assert_eq!(cap(None, 4), 32);
    }
}
