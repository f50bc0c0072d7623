//! The task table: every task the shim knows, persisted to `<home>/tasks.json` on each change
//! so a restarted shim still knows its runners (§1.9).

use std::collections::BTreeMap;
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
/// path (exit, failure, `/terminate`, recovery) gets it there.
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
            t.clone()
        })
    }

    pub(crate) fn remove(&self, id: &str) {
        let mut tasks = self.lock();
        tasks.remove(id);
        self.gpu_lock().release(id);
        self.persist(&tasks);
    }
}
