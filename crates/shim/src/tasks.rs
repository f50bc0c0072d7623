//! The task table: every task the shim knows, persisted to `<home>/tasks.json` on each change
//! so a restarted shim still knows its runners (§1.9).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use dstack_agent_proto::shim::{PortMapping, TaskInfoResponse, TaskListItem, TaskStatus};
use dstack_api::runs::ImagePullProgress;
use serde::{Deserialize, Serialize};

use crate::devices::GpuLock;

/// How a task runs, and what a restarted shim needs to find it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub(crate) enum Handle {
    /// Not started yet.
    None,
    /// A `dstack-runner` child process, leader of its own process group.
    Process {
        pid: i32,
    },
    Docker {
        container_id: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Task {
    pub(crate) id: String,
    pub(crate) status: TaskStatus,
    pub(crate) termination_reason: String,
    pub(crate) termination_message: String,
    pub(crate) ports: Option<Vec<PortMapping>>,
    pub(crate) image_pull_progress: Option<ImagePullProgress>,
    pub(crate) container_name: String,
    pub(crate) runner_dir: PathBuf,
    pub(crate) handle: Handle,
    /// The GPUs the task holds (or held): NVIDIA UUIDs or AMD render nodes.
    #[serde(default)]
    pub(crate) gpu_ids: Vec<String>,
    /// The authorized_keys file holding this task's `host_ssh_keys` lines while it is not
    /// terminated ([`crate::host_keys`]).
    #[serde(default)]
    pub(crate) host_keys: Option<PathBuf>,
}

impl Task {
    pub(crate) fn info(&self) -> TaskInfoResponse {
        TaskInfoResponse {
            id: self.id.clone(),
            status: self.status,
            termination_reason: self.termination_reason.clone(),
            termination_message: self.termination_message.clone(),
            ports: self.ports.clone(),
            image_pull_progress: self.image_pull_progress.clone(),
            container_name: self.container_name.clone(),
            container_id: match &self.handle {
                Handle::Docker { container_id } => container_id.clone(),
                Handle::Process { .. } | Handle::None => String::new(),
            },
            gpus_ids: self.gpu_ids.clone(),
        }
    }
}

/// The tasks, behind one lock; every mutation is written through to disk. The GPU lock lives
/// here too, so that a task gives its GPUs back whenever it becomes `terminated`, whichever
/// path (exit, failure, `/terminate`, recovery) gets it there; its host SSH keys are taken
/// out of authorized_keys on the same paths.
pub(crate) struct Store {
    path: PathBuf,
    tasks: Mutex<BTreeMap<String, Task>>,
    gpus: Mutex<GpuLock>,
}

impl Store {
    pub(crate) fn load(home: &Path, gpus: GpuLock) -> Store {
        let path = home.join("tasks.json");
        let tasks: Vec<Task> = std::fs::read(&path)
            .ok()
            .and_then(|bytes| match serde_json::from_slice(&bytes) {
                Ok(tasks) => Some(tasks),
                Err(e) => {
                    tracing::error!(%e, path = %path.display(), "ignoring an unreadable task table");
                    None
                }
            })
            .unwrap_or_default();
        let tasks = tasks.into_iter().map(|t| (t.id.clone(), t)).collect();
        Store { path, tasks: Mutex::new(tasks), gpus: Mutex::new(gpus) }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Task>> {
        self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn gpu_lock(&self) -> MutexGuard<'_, GpuLock> {
        self.gpus.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes `count` GPUs for a task that is not terminated (§1.4: -1 all free, 0 none, N
    /// exactly N), recording them on the task. `Err` says why not (no capacity, terminated).
    pub(crate) fn acquire_gpus(&self, id: &str, count: i64) -> Result<Vec<String>, String> {
        let mut tasks = self.lock();
        let task = tasks.get_mut(id).ok_or_else(|| format!("task {id} is gone"))?;
        if task.status == TaskStatus::Terminated {
            return Err(format!("task {id} was terminated"));
        }
        let ids = self.gpu_lock().acquire(id, count)?;
        task.gpu_ids.clone_from(&ids);
        self.persist(&tasks);
        Ok(ids)
    }

    /// Adds a task's `host_ssh_keys` to the authorized_keys file at `path` unless the task
    /// was terminated, and records the file so that they go when it becomes terminated.
    pub(crate) fn add_host_keys(&self, id: &str, path: PathBuf, keys: &[String]) -> Result<(), String> {
        let mut tasks = self.lock();
        let task = tasks.get_mut(id).ok_or_else(|| format!("task {id} is gone"))?;
        if task.status == TaskStatus::Terminated {
            return Err(format!("task {id} was terminated"));
        }
        crate::host_keys::add(&path, keys, id)?;
        task.host_keys = Some(path);
        self.persist(&tasks);
        Ok(())
    }

    /// Picks the host ports of a task's runner with `pick`, given the host ports the other
    /// unfinished tasks hold, and records them on the task at once, so that two tasks starting
    /// together never get the same ones.
    pub(crate) fn claim_runner_ports(
        &self,
        id: &str,
        pick: impl FnOnce(&HashSet<u16>) -> Result<(u16, u16), String>,
    ) -> Result<(u16, u16), String> {
        let mut tasks = self.lock();
        let taken: HashSet<u16> = tasks
            .values()
            .filter(|t| t.id != id && t.status != TaskStatus::Terminated)
            .flat_map(|t| t.ports.iter().flatten().map(|p| p.host))
            .collect();
        let (http, ssh) = pick(&taken)?;
        let task = tasks.get_mut(id).ok_or_else(|| format!("task {id} is gone"))?;
        task.ports = Some(vec![
            PortMapping { host: http, container: dstack_agent_proto::RUNNER_HTTP_PORT },
            PortMapping { host: ssh, container: dstack_agent_proto::RUNNER_SSH_PORT },
        ]);
        self.persist(&tasks);
        Ok((http, ssh))
    }

    /// Re-locks a recovered running task's GPUs; returns those it got.
    pub(crate) fn relock_gpus(&self, id: &str, ids: &[String]) -> Vec<String> {
        self.gpu_lock().lock(id, ids)
    }

    fn persist(&self, tasks: &BTreeMap<String, Task>) {
        let list: Vec<&Task> = tasks.values().collect();
        let tmp = self.path.with_extension("json.tmp");
        let written = serde_json::to_vec_pretty(&list)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::error!(%e, path = %self.path.display(), "cannot persist the task table");
        }
    }

    pub(crate) fn get(&self, id: &str) -> Option<Task> {
        self.lock().get(id).cloned()
    }

    pub(crate) fn all(&self) -> Vec<Task> {
        self.lock().values().cloned().collect()
    }

    pub(crate) fn list(&self) -> Vec<TaskListItem> {
        self.lock().values().map(|t| TaskListItem { id: t.id.clone(), status: t.status }).collect()
    }

    /// Adds a new task; `false` if the id exists.
    pub(crate) fn insert(&self, task: Task) -> bool {
        let mut tasks = self.lock();
        if tasks.contains_key(&task.id) {
            return false;
        }
        tasks.insert(task.id.clone(), task);
        self.persist(&tasks);
        true
    }

    /// Adds a task or replaces the one with its id (restart recovery).
    pub(crate) fn put(&self, task: Task) {
        let mut tasks = self.lock();
        tasks.insert(task.id.clone(), task);
        self.persist(&tasks);
    }

    /// Applies `f` to a task and persists; `None` if there is no such task.
    pub(crate) fn update<T>(&self, id: &str, f: impl FnOnce(&mut Task) -> T) -> Option<T> {
        let mut tasks = self.lock();
        let task = tasks.get_mut(id)?;
        let out = f(task);
        self.persist(&tasks);
        Some(out)
    }

    /// Moves a task to `status` if the state machine allows it; `false` otherwise (e.g. it
    /// was terminated meanwhile).
    pub(crate) fn advance(&self, id: &str, status: TaskStatus) -> bool {
        self.update(id, |t| {
            let allowed = t.status.can_become(status) && status != TaskStatus::Terminated;
            if allowed {
                t.status = status;
            }
            allowed
        })
        .unwrap_or(false)
    }

    /// `→ terminated`, keeping an earlier reason and message (`TaskStorage.Update`).
    pub(crate) fn terminate(&self, id: &str, reason: &str, message: &str) -> Option<Task> {
        self.update(id, |t| {
            if t.status != TaskStatus::Terminated || t.termination_reason.is_empty() {
                t.termination_reason = reason.to_owned();
                t.termination_message = message.to_owned();
            }
            t.status = TaskStatus::Terminated;
            self.gpu_lock().release(id);
            remove_host_keys(t);
            t.clone()
        })
    }

    pub(crate) fn remove(&self, id: &str) {
        let mut tasks = self.lock();
        if let Some(mut task) = tasks.remove(id) {
            remove_host_keys(&mut task);
        }
        self.gpu_lock().release(id);
        self.persist(&tasks);
    }
}

/// Takes a task's host SSH keys out of the file they were added to (once).
fn remove_host_keys(task: &mut Task) {
    if let Some(path) = task.host_keys.take()
        && let Err(e) = crate::host_keys::remove(&path, &task.id)
    {
        tracing::error!(id = %task.id, %e, "cannot remove the task's host SSH keys");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> Task {
        Task {
            id: id.to_owned(),
            status: TaskStatus::Pending,
            termination_reason: String::new(),
            termination_message: String::new(),
            ports: None,
            image_pull_progress: None,
            container_name: format!("{id}-c"),
            runner_dir: PathBuf::from("/nonexistent"),
            handle: Handle::None,
            gpu_ids: Vec::new(),
            host_keys: None,
        }
    }

    #[test]
    fn runner_ports_are_claimed_until_the_task_is_terminated() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::load(home.path(), GpuLock::new(Vec::new()));
        assert!(store.insert(task("a")) && store.insert(task("b")));
        assert_eq!(store.claim_runner_ports("a", |_| Ok((10999, 10022))), Ok((10999, 10022)));
        let mut seen = HashSet::new();
        store
            .claim_runner_ports("b", |taken| {
                seen.clone_from(taken);
                Ok((40000, 40001))
            })
            .unwrap();
        assert_eq!(seen, HashSet::from([10999, 10022]));
        store.terminate("a", "done_by_runner", "");
        store.claim_runner_ports("a2", |_| Ok((1, 2))).expect_err("no such task");
        assert!(store.insert(task("c")));
        store
            .claim_runner_ports("c", |taken| {
                seen.clone_from(taken);
                Ok((10999, 10022))
            })
            .unwrap();
        assert_eq!(seen, HashSet::from([40000, 40001]), "a terminated task holds no ports");
    }

    #[test]
    fn host_keys_go_when_the_task_is_terminated() {
        let home = tempfile::tempdir().unwrap();
        let keys = home.path().join("authorized_keys");
        std::fs::write(&keys, "ssh-ed25519 AAAAproject project\n").unwrap();
        let store = Store::load(home.path(), GpuLock::new(Vec::new()));
        assert!(store.insert(task("a")));
        store.add_host_keys("a", keys.clone(), &["ssh-ed25519 AAAAuser u".to_owned()]).unwrap();
        assert!(std::fs::read_to_string(&keys).unwrap().contains("AAAAuser u dstack-task=a"));
        store.terminate("a", "done_by_runner", "");
        assert_eq!(std::fs::read_to_string(&keys).unwrap(), "ssh-ed25519 AAAAproject project\n");
        let err = store.add_host_keys("a", keys.clone(), &["ssh-ed25519 AAAAuser u".to_owned()]);
        assert!(err.is_err(), "a terminated task gets no keys");
        assert_eq!(std::fs::read_to_string(&keys).unwrap(), "ssh-ed25519 AAAAproject project\n");
    }
}
