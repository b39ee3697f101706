//! How many tasks one deft process runs at once when it is not told. A task spends most of
//! its life waiting on the model, so the cap is set by what the machine can hold when many of
//! them run commands at once, never below the per-user limit's default of 10.

/// The fewest tasks run at once by default: the per-user limit, so one user's burst shows.
pub const FLOOR: usize = crate::DEFAULT_PER_USER as usize;
/// Memory set aside for each running task: its sandbox's commands, the engine's state, and
/// the clone's page cache (docs/PERFORMANCE.md has what an idle running task measures).
pub const MEMORY_PER_TASK: u64 = 512 * 1024 * 1024;
/// Running tasks per core: most of them wait on the model at any moment.
pub const TASKS_PER_CORE: usize = 8;

/// What the cap is reckoned from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    pub cores: usize,
    /// Bytes of memory: the machine's, or its cgroup's limit when that is lower; `None` when
    /// it cannot be read.
    pub memory: Option<u64>,
}

impl Machine {
    /// This machine.
    pub fn probe() -> Machine {
        Machine {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            memory: memory_total(),
        }
    }

    /// The default cap: [`TASKS_PER_CORE`] a core and [`MEMORY_PER_TASK`] each, whichever
    /// allows fewer, and never under [`FLOOR`].
    pub fn capacity(&self) -> usize {
        let by_cpu = self.cores.saturating_mul(TASKS_PER_CORE);
        let by_memory = self.memory.map_or(usize::MAX, |bytes| {
            usize::try_from(bytes / MEMORY_PER_TASK).unwrap_or(usize::MAX)
        });
        by_cpu.min(by_memory).max(FLOOR)
    }
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

    fn cap(memory: Option<u64>, cores: usize) -> usize {
        Machine { cores, memory }.capacity()
    }

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
