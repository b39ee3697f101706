//! Memory and process limits with cgroups: v2 where the host has it, v1 (the memory and pids
//! controllers) otherwise. A sandbox gets a cgroup of its own under deft's, which also lets
//! deft kill everything in it and tell an out-of-memory kill or a fork bomb from a crash.

use std::path::{Path, PathBuf};

/// The cgroup layout of this host, as far as deft may use it.
#[derive(Debug, Clone)]
pub enum Cgroups {
    V2 {
        base: PathBuf,
    },
    /// The freezer, when its hierarchy is mounted and writable, pauses programs atomically.
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        freezer: Option<PathBuf>,
    },
    None(String),
}

impl Cgroups {
    pub fn probe() -> Cgroups {
        let Ok(own) = std::fs::read_to_string("/proc/self/cgroup") else {
            return Cgroups::None("/proc/self/cgroup is unreadable".into());
        };
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            let path = own
                .lines()
                .find_map(|line| line.strip_prefix("0::"))
                .unwrap_or("/");
            let base = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
            return match writable(&base) {
                Ok(()) => Cgroups::V2 { base },
                Err(why) => Cgroups::None(format!(
                    "cgroup v2 at {} is not delegated to deft ({why})",
                    base.display()
                )),
            };
        }
        let find = |controller: &str| {
            own.lines().find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers.split(',').any(|c| c == controller).then(|| {
                    Path::new("/sys/fs/cgroup")
                        .join(controller)
                        .join(path.trim_start_matches('/'))
                })
            })
        };
        match (find("memory"), find("pids")) {
            (Some(memory), Some(pids)) => match writable(&memory).and_then(|()| writable(&pids)) {
                Ok(()) => Cgroups::V1 {
                    memory,
                    pids,
                    freezer: find("freezer").filter(|freezer| writable(freezer).is_ok()),
                },
                Err(why) => {
                    Cgroups::None(format!("cgroup v1 controllers are not writable ({why})"))
                }
            },
            _ => Cgroups::None("no memory and pids cgroup controllers".into()),
        }
    }

    pub fn limits_memory(&self) -> bool {
        !matches!(self, Cgroups::None(_))
    }

    pub fn describe(&self) -> String {
        match self {
            Cgroups::V2 { base } => format!("v2 under {}", base.display()),
            Cgroups::V1 {
                memory, freezer, ..
            } => format!(
                "v1 (memory, pids{}) under {}",
                if freezer.is_some() { ", freezer" } else { "" },
                memory.display()
            ),
            Cgroups::None(why) => format!("none usable: {why}"),
        }
    }

    /// The directories each sandbox's cgroups are made in: one on v2, one per controller on
    /// v1, none without cgroups.
    fn parents(&self) -> Vec<&PathBuf> {
        match self {
            Cgroups::None(_) => Vec::new(),
            Cgroups::V2 { base } => vec![base],
            Cgroups::V1 {
                memory,
                pids,
                freezer,
            } => [Some(memory), Some(pids), freezer.as_ref()]
                .into_iter()
                .flatten()
                .collect(),
        }
    }

    /// Kills and removes the cgroups named `PREFIX<pid>-…` whose deft process is gone.
    pub fn sweep_stale(&self, prefix: &str) {
        for parent in self.parents() {
            let Ok(entries) = std::fs::read_dir(parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(pid) = name
                    .strip_prefix(prefix)
                    .and_then(|rest| rest.split('-').next())
                else {
                    continue;
                };
                if Path::new("/proc").join(pid).exists() {
                    continue;
                }
                let stale = SandboxCgroup {
                    v2: matches!(self, Cgroups::V2 { .. }),
                    dirs: vec![entry.path()],
                    freezer: None,
                };
                stale.remove();
            }
        }
    }

    /// Makes the cgroup(s) of one sandbox with its limits.
    pub fn create(
        &self,
        name: &str,
        memory: u64,
        processes: u64,
    ) -> std::io::Result<Option<SandboxCgroup>> {
        if let Cgroups::None(_) = self {
            return Ok(None);
        }
        let dirs: Vec<PathBuf> = self
            .parents()
            .into_iter()
            .map(|parent| parent.join(name))
            .collect();
        for dir in &dirs {
            std::fs::create_dir(dir)?;
        }
        let group = SandboxCgroup {
            v2: matches!(self, Cgroups::V2 { .. }),
            freezer: match self {
                Cgroups::V1 {
                    freezer: Some(_), ..
                } => Some(2),
                _ => None,
            },
            dirs,
        };
        match self {
            Cgroups::V2 { .. } => {
                group.write(0, "memory.max", &memory.to_string())?;
                group.write(0, "memory.swap.max", "0").ok();
                group.write(0, "pids.max", &processes.to_string())?;
            }
            _ => {
                group.write(0, "memory.limit_in_bytes", &memory.to_string())?;
                // Without this, a memory bomb swaps instead of being stopped.
                group
                    .write(0, "memory.memsw.limit_in_bytes", &memory.to_string())
                    .ok();
                group.write(1, "pids.max", &processes.to_string())?;
            }
        }
        Ok(Some(group))
    }
}

fn writable(dir: &Path) -> Result<(), String> {
    // Unique within the process too: probes of one process may run at once.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!("deft-probe-{}-{n}", std::process::id()));
    std::fs::create_dir(&probe).map_err(|error| format!("{}: {error}", dir.display()))?;
    std::fs::remove_dir(&probe).map_err(|error| error.to_string())
}

/// One sandbox's cgroup(s).
#[derive(Debug)]
pub struct SandboxCgroup {
    v2: bool,
    dirs: Vec<PathBuf>,
    /// Which of `dirs` is v1's freezer, when there is one.
    freezer: Option<usize>,
}

impl SandboxCgroup {
    fn write(&self, dir: usize, file: &str, value: &str) -> std::io::Result<()> {
        std::fs::write(self.dirs[dir].join(file), value)
    }

    fn read(&self, dir: usize, file: &str) -> String {
        std::fs::read_to_string(self.dirs[dir].join(file)).unwrap_or_default()
    }

    /// The files a process writes its pid to, to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|dir| dir.join("cgroup.procs"))
            .collect()
    }

    /// Freezes everything inside through the cgroup freezer (v2's `cgroup.freeze`, or v1's
    /// `freezer.state` when that hierarchy is there), forks included, and waits until the
    /// kernel says it is frozen. The file and the value that thaw it come back; `None` where
    /// there is no freezer or it did not finish in time (then it is thawed again).
    pub fn freeze(&self, patience: std::time::Duration) -> Option<(PathBuf, &'static str)> {
        let (dir, file, frozen, thawed) = if self.v2 {
            (0, "cgroup.freeze", "1", "0")
        } else {
            (self.freezer?, "freezer.state", "FROZEN", "THAWED")
        };
        let control = self.dirs[dir].join(file);
        std::fs::write(&control, frozen).ok()?;
        let started = std::time::Instant::now();
        while started.elapsed() < patience {
            let done = if self.v2 {
                counter(&self.read(0, "cgroup.events"), "frozen") == 1
            } else {
                self.read(dir, "freezer.state").trim() == "FROZEN"
            };
            if done {
                return Some((control, thawed));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let _ = std::fs::write(&control, thawed);
        None
    }

    /// Changes the limits (a sandbox started ahead of its task gets the task's).
    pub fn set_limits(&self, memory: u64, processes: u64) -> std::io::Result<()> {
        if self.v2 {
            self.write(0, "memory.max", &memory.to_string())?;
            self.write(0, "pids.max", &processes.to_string())
        } else {
            // v1 wants memory+swap at least memory: raise it first, lower it last.
            let memory = memory.to_string();
            self.write(0, "memory.memsw.limit_in_bytes", &memory).ok();
            self.write(0, "memory.limit_in_bytes", &memory)?;
            self.write(0, "memory.memsw.limit_in_bytes", &memory).ok();
            self.write(1, "pids.max", &processes.to_string())
        }
    }

    /// Sends SIGKILL to everything inside, once, without waiting.
    pub fn kill_once(&self) -> bool {
        let mut any = false;
        for dir in &self.dirs {
            for pid in std::fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                if let Some(pid) = pid
                    .trim()
                    .parse::<i32>()
                    .ok()
                    .and_then(rustix::process::Pid::from_raw)
                {
                    any = true;
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        any
    }

    /// Kills everything inside, until nothing is left.
    pub fn kill_all(&self) {
        for _ in 0..50 {
            if !self.kill_once() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// How many times the kernel killed a process here for memory.
    pub fn oom_kills(&self) -> u64 {
        let text = if self.v2 {
            self.read(0, "memory.events")
        } else {
            self.read(0, "memory.oom_control")
        };
        counter(&text, "oom_kill")
    }

    /// How many forks the process limit refused.
    pub fn pids_refused(&self) -> u64 {
        let dir = if self.v2 { 0 } else { 1 };
        counter(&self.read(dir, "pids.events"), "max")
    }

    pub fn remove(&self) {
        // Frozen processes die only once thawed.
        for dir in &self.dirs {
            let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
            let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
        }
        self.kill_all();
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0)
}
