//! `GET /api/metrics`: the job's CPU time, memory and GPUs (spec agents.md §2.3, §3.5).
//!
//! Two sources, the first that works:
//! - **cgroup v2** of the runner itself (`/proc/self/cgroup` + the `cgroup2` mount), as dstack's
//!   runner reads it: `cpu.stat usage_usec`, `memory.current`, working set `memory.current -
//!   inactive_file`. It is used only when it is *meaningful*: every process in it is the runner,
//!   a descendant of the runner, or the container's init that started the runner (docker mode).
//!   A runner started as a host process (the shim's process mode) shares its cgroup with its
//!   supervisor and whatever else runs there, so that cgroup says nothing about the job.
//! - **`/proc`**, summed over the job's process group (its id is in `<temp>/job.pid` while the
//!   job runs): `utime + stime + cutime + cstime` of `/proc/<pid>/stat` (clock ticks, so the
//!   time of reaped children stays counted) and `VmRSS` of `/proc/<pid>/status` as both the
//!   usage and the working set. Before and after the job the sums are over no process.
//!
//! The CPU counter never goes backwards: a process that leaves the group takes its time with
//! it, so the runner reports the highest value seen (dstack derives a rate from consecutive
//! samples). GPUs come from `nvidia-smi` when it is installed (none otherwise).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use dstack_agent_proto::runner::{GpuMetrics, MetricsResponse};

/// Collects samples; remembers the highest CPU counter reported.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    cpu_high_water: Mutex<u64>,
}

/// What one source read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Usage {
    cpu_usage_micro: u64,
    memory_usage_bytes: u64,
    memory_working_set_bytes: u64,
}

impl Collector {
    /// A sample, or `None` when neither the cgroup nor `/proc` can be read.
    pub(crate) async fn sample(&self, temp_dir: &Path) -> Option<MetricsResponse> {
        let pgid_file = temp_dir.join(dstack_agent_proto::runner_files::JOB_PID);
        let usage = tokio::task::spawn_blocking(move || read_usage(&pgid_file)).await.ok()??;
        let gpus = nvidia_gpus().await;
        let timestamp_micro = now_micros();
        let cpu_usage_micro = {
            let mut high = self.cpu_high_water.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *high = (*high).max(usage.cpu_usage_micro);
            *high
        };
        Some(MetricsResponse {
            timestamp_micro,
            cpu_usage_micro,
            memory_usage_bytes: usage.memory_usage_bytes,
            memory_working_set_bytes: usage.memory_working_set_bytes,
            gpus,
        })
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

fn read_usage(pgid_file: &Path) -> Option<Usage> {
    if let Some(dir) = own_cgroup_dir()
        && cgroup_is_meaningful(&dir)
        && let Some(usage) = cgroup_usage(&dir)
    {
        return Some(usage);
    }
    let pgid = std::fs::read_to_string(pgid_file).ok().and_then(|s| s.trim().parse::<i32>().ok());
    proc_usage(pgid)
}

// ---- cgroup v2 ----

/// The runner's cgroup v2 directory, if there is one.
fn own_cgroup_dir() -> Option<PathBuf> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let path = cgroup_v2_path(&cgroup)?;
    let mount = cgroup2_mount(&mounts)?;
    let dir = Path::new(mount).join(path.trim_start_matches('/'));
    dir.is_dir().then_some(dir)
}

/// The unified hierarchy's path in `/proc/self/cgroup` (the `0::` line).
fn cgroup_v2_path(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// Where the `cgroup2` file system is mounted, from `/proc/self/mounts`.
fn cgroup2_mount(text: &str) -> Option<&str> {
    text.lines().find_map(|l| {
        let mut fields = l.split_whitespace();
        let (_, mount, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then_some(mount)
    })
}

/// Whether the cgroup holds only the runner, its descendants, and the init that started it.
fn cgroup_is_meaningful(dir: &Path) -> bool {
    let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
        return false;
    };
    let me = std::process::id() as i32;
    let my_parent = read_stat(me).map(|s| s.ppid);
    procs
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .all(|pid| pid == me || (pid == 1 && my_parent == Some(1)) || is_descendant(pid, me))
}

fn is_descendant(pid: i32, ancestor: i32) -> bool {
    let mut at = pid;
    for _ in 0..128 {
        match read_stat(at) {
            Some(stat) if stat.ppid == ancestor => return true,
            Some(stat) if stat.ppid > 1 => at = stat.ppid,
            _ => return false,
        }
    }
    false
}

fn cgroup_usage(dir: &Path) -> Option<Usage> {
    let cpu_stat = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
    let cpu_usage_micro = stat_value(&cpu_stat, "usage_usec")?;
    let current: u64 = std::fs::read_to_string(dir.join("memory.current")).ok()?.trim().parse().ok()?;
    let inactive_file = std::fs::read_to_string(dir.join("memory.stat"))
        .ok()
        .and_then(|s| stat_value(&s, "inactive_file"))
        .unwrap_or(0);
    Some(Usage {
        cpu_usage_micro,
        memory_usage_bytes: current,
        memory_working_set_bytes: current.saturating_sub(inactive_file),
    })
}

/// A `key value` line of `cpu.stat` or `memory.stat`.
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        if k == key { v.trim().parse().ok() } else { None }
    })
}

// ---- /proc ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    ppid: i32,
    pgrp: i32,
    /// utime + stime + cutime + cstime, in clock ticks.
    cpu_ticks: u64,
}

fn read_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `/proc/<pid>/stat`; the command name in parentheses may hold spaces and parentheses.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let field = |n: usize| fields.get(n - 3).copied();
    let ticks = |n: usize| field(n).and_then(|f| f.parse::<i64>().ok()).map(|t| t.max(0) as u64);
    Some(ProcStat {
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        cpu_ticks: ticks(14)? + ticks(15)? + ticks(16)? + ticks(17)?,
    })
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes (kernel threads have none).
fn parse_vm_rss(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

fn clock_ticks_per_second() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as u64,
        _ => 100,
    }
}

/// Sums over the process group `pgid` (none: zeros); `None` if `/proc` cannot be read.
fn proc_usage(pgid: Option<i32>) -> Option<Usage> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let mut ticks = 0u64;
    let mut rss = 0u64;
    if let Some(pgid) = pgid {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let Some(stat) = read_stat(pid) else { continue };
            if stat.pgrp != pgid {
                continue;
            }
            ticks += stat.cpu_ticks;
            rss += std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| parse_vm_rss(&s))
                .unwrap_or(0);
        }
    }
    let cpu_usage_micro = ticks.saturating_mul(1_000_000) / clock_ticks_per_second();
    Some(Usage { cpu_usage_micro, memory_usage_bytes: rss, memory_working_set_bytes: rss })
}

// ---- GPUs ----

/// Every NVIDIA GPU's memory use and utilization; none without `nvidia-smi` or on its failure.
async fn nvidia_gpus() -> Vec<GpuMetrics> {
    let output = tokio::process::Command::new("nvidia-smi")
        .args(["--query-gpu=memory.used,utilization.gpu", "--format=csv,noheader,nounits"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(10), output).await {
        Ok(Ok(out)) if out.status.success() => parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout))
            .unwrap_or_else(|e| {
                tracing::warn!("cannot parse nvidia-smi output: {e}");
                Vec::new()
            }),
        Ok(Ok(out)) => {
            tracing::warn!("nvidia-smi failed: {}", String::from_utf8_lossy(&out.stderr).trim());
            Vec::new()
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Ok(Err(e)) => {
            tracing::warn!("cannot run nvidia-smi: {e}");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!("nvidia-smi did not answer in time");
            Vec::new()
        }
    }
}

/// `memory.used, utilization.gpu` lines (MiB, percent), as dstack's runner parses them.
fn parse_nvidia_smi(text: &str) -> Result<Vec<GpuMetrics>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (memory, util) =
                line.split_once(", ").ok_or_else(|| format!("two fields expected in {line:?}"))?;
            let memory_mib: u64 =
                memory.trim().parse().map_err(|_| format!("bad memory.used {memory:?} in {line:?}"))?;
            let util: u64 = util
                .trim()
                .trim_end_matches('%')
                .trim()
                .parse()
                .map_err(|_| format!("bad utilization.gpu {util:?} in {line:?}"))?;
            Ok(GpuMetrics { gpu_memory_usage_bytes: memory_mib * 1024 * 1024, gpu_util_percent: util })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_unified_cgroup_and_its_mount() {
        let cgroup = "12:pids:/docker/abc\n0::/user.slice/user-1000.slice/session-2.scope\n";
        assert_eq!(cgroup_v2_path(cgroup), Some("/user.slice/user-1000.slice/session-2.scope"));
        assert_eq!(cgroup_v2_path("0::/\n"), Some("/"));
        assert_eq!(cgroup_v2_path("4:memory:/x\n"), None);
        let mounts = "proc /proc proc rw 0 0\ncgroup /sys/fs/cgroup cgroup2 ro,nosuid 0 0\n";
        assert_eq!(cgroup2_mount(mounts), Some("/sys/fs/cgroup"));
        assert_eq!(cgroup2_mount("tmpfs /sys/fs/cgroup tmpfs rw 0 0\n"), None);
    }

    #[test]
    fn reads_cgroup_stat_files() {
        let cpu = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n";
        assert_eq!(stat_value(cpu, "usage_usec"), Some(123_456));
        let mem = "anon 4096\nfile 8192\nactive_file 100\ninactive_file 2048\n";
        assert_eq!(stat_value(mem, "inactive_file"), Some(2048));
        assert_eq!(stat_value(mem, "file_dirty"), None);
    }

    #[test]
    fn parses_proc_stat_with_odd_command_names() {
        let text = "4242 (my (odd) cmd) R 4000 4242 4242 0 -1 4194304 100 0 0 0 250 50 7 3 20 0 1 0 \
                    123 4096 300 18446744073709551615\n";
        assert_eq!(parse_stat(text), Some(ProcStat { ppid: 4000, pgrp: 4242, cpu_ticks: 310 }));
        assert_eq!(parse_stat("garbage"), None);
        let status = "Name:\tbash\nVmPeak:\t  9000 kB\nVmRSS:\t    3456 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(3456 * 1024));
        assert_eq!(parse_vm_rss("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn our_own_stat_parses() {
        let stat = read_stat(std::process::id() as i32).expect("our /proc/self/stat");
        assert!(stat.ppid > 0);
    }

    #[test]
    fn parses_nvidia_smi_like_dstack() {
        let text = "1024, 35\n81559, 100 %\n\n";
        let gpus = parse_nvidia_smi(text).unwrap();
        assert_eq!(
            gpus,
            [
                GpuMetrics { gpu_memory_usage_bytes: 1024 * 1048576, gpu_util_percent: 35 },
                GpuMetrics { gpu_memory_usage_bytes: 81559 * 1048576, gpu_util_percent: 100 },
            ]
        );
        assert!(parse_nvidia_smi("").unwrap().is_empty());
        assert!(parse_nvidia_smi("[N/A], 3\n").is_err());
        assert!(parse_nvidia_smi("12 34\n").is_err());
    }

    #[test]
    fn no_process_group_means_zeros() {
        let usage = proc_usage(None).expect("/proc is readable");
        assert_eq!(usage, Usage { cpu_usage_micro: 0, memory_usage_bytes: 0, memory_working_set_bytes: 0 });
    }
}
