//! The state every handler and background loop shares.

use std::sync::Arc;

use dstack_api::runs::InstanceOfferWithAvailability;
use dstack_db::{Db, DbError};
use dstack_decide::offers::InstanceCandidate;
use uuid::Uuid;

use crate::ServerError;
use crate::config::ServerConfig;
use crate::crypto::Cipher;
use crate::pipelines::Hints;
use crate::ssh_hosts::SshHosts;

/// What every handler and loop shares: the database pool, the secrets cipher, the loops'
/// wake-up hints, the service proxy… Cheap to clone: one reference count (every request
/// clones it, some twice), the fields through `Deref`.
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct SharedState {
    pub db: Db,
    pub cipher: Arc<Cipher>,
    pub hints: Arc<Hints>,
    /// The HTTP client for shims and runners (one connection pool).
    pub agent_http: reqwest::Client,
    /// Held while a user's missing SSH keys are made.
    pub key_lock: Arc<tokio::sync::Mutex<()>>,
    /// SSH-fleet hosts: one connection per instance, the agents to deploy.
    pub ssh: Arc<SshHosts>,
    /// How long a running job's host may stay unreachable (dstack's 2 minutes but in tests).
    pub job_disconnected_timeout: jiff::SignedDuration,
    /// The in-server service proxy: pooled connections to replicas and their request stats.
    pub proxy: Arc<dstack_proxy::Proxy>,
    /// How long a request to a service scaled to zero waits for a ready replica (dstack's
    /// `DSTACK_SERVICE_CLIENT_TIMEOUT`).
    pub service_wake_timeout: std::time::Duration,
    /// Each service's load at the in-server proxy over the autoscaling windows, by run id.
    pub load: Arc<dstack_proxy::load::LoadTracker>,
    /// Each gateway-served service's load as its gateway reported it (`/api/stats/collect`,
    /// by run id), for the autoscaler.
    pub gateway_load: Arc<crate::pipelines::gateway_load::GatewayLoad>,
    /// Recently looked-up service routes and granted tokens (see `services::Routes`).
    pub routes: Arc<crate::services::Routes>,
    /// The runtime that opened the state: the database pool's, the SSH connections' and the
    /// background loops' (see [`AppState::on_main`]).
    pub main: tokio::runtime::Handle,
}

impl AppState {
    /// Opens (and migrates) the database and loads or creates the encryption key.
    pub async fn open(config: &ServerConfig) -> Result<AppState, ServerError> {
        let cipher = Cipher::load_or_create(&config.server_dir.join("data").join("encryption.key"))?;
        let db = Db::connect(&config.database_url()).await?;
        let agent_http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| ServerError::Config(format!("HTTP client: {e}")))?;
        let shim_binary = config.shim_binary.clone().unwrap_or_else(crate::local_fleet::default_shim_binary);
        let runner_binary = config
            .runner_binary
            .clone()
            .unwrap_or_else(|| crate::ssh_hosts::default_runner_binary(&shim_binary));
        Ok(AppState(Arc::new(SharedState {
            db,
            cipher: Arc::new(cipher),
            hints: Arc::new(Hints::default()),
            agent_http,
            key_lock: Arc::default(),
            ssh: Arc::new(SshHosts::new(shim_binary, runner_binary, config.instance_check_interval)),
            job_disconnected_timeout: jiff::SignedDuration::try_from(config.job_disconnected_timeout)
                .unwrap_or(dstack_decide::job::DISCONNECTED_TIMEOUT),
            proxy: dstack_proxy::Proxy::new(dstack_proxy::Options {
                response_timeout: config.service_client_timeout,
                ..dstack_proxy::Options::default()
            }),
            service_wake_timeout: config.service_client_timeout,
            load: Arc::default(),
            gateway_load: Arc::default(),
            routes: Arc::default(),
            main: tokio::runtime::Handle::current(),
        })))
    }

    /// Runs `work` on the main runtime and waits for it; right here when this is the main
    /// runtime. For the listener's worker threads ([`crate::serve`]), whose runtimes must
    /// not open database or SSH connections: those would be tied to the worker's runtime.
    /// Dropping the returned future cancels `work`, as dropping `work` itself would. An
    /// error only if `work` panicked or the main runtime is shutting down.
    pub async fn on_main<F>(&self, work: F) -> Result<F::Output, tokio::task::JoinError>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if tokio::runtime::Handle::try_current().is_ok_and(|h| h.id() == self.main.id()) {
            return Ok(work.await);
        }
        /// Aborts the task when the waiter goes away.
        struct Cancel<T>(tokio::task::JoinHandle<T>);
        impl<T> Drop for Cancel<T> {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let mut task = Cancel(self.main.spawn(work));
        (&mut task.0).await
    }

    /// The project's `idle` and `busy` instances as offers for its runs (pending, terminating
    /// and terminated ones offer nothing yet or any more); an instance whose stored offer does
    /// not parse is left out (and logged).
    pub async fn instance_candidates(&self, project_id: Uuid) -> Result<Vec<InstanceCandidate>, DbError> {
        let mut out = Vec::new();
        let clusters: std::collections::HashSet<Uuid> = self
            .db
            .list_fleets(project_id)
            .await?
            .into_iter()
            .filter(|f| {
                serde_json::from_str::<dstack_api::fleets::FleetSpec>(&f.spec).is_ok_and(|spec| {
                    spec.configuration.placement == Some(dstack_model::fleet::InstanceGroupPlacement::Cluster)
                })
            })
            .map(|f| f.id)
            .collect();
        for (i, fleet_name) in self.db.list_instances_with_fleet(project_id).await? {
            if i.status != "idle" && i.status != "busy" {
                continue;
            }
            let (Some(offer), Some(total_blocks)) = (&i.offer, i.total_blocks) else { continue };
            let offer: InstanceOfferWithAvailability = match serde_json::from_str(offer) {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(instance = %i.name, error = %e, "stored instance offer does not parse");
                    continue;
                }
            };
            out.push(InstanceCandidate {
                id: i.id,
                fleet_id: i.fleet_id,
                fleet_name,
                usable: i.agent_url.is_some() && !i.unreachable,
                offer,
                total_blocks,
                busy_blocks: i.busy_blocks,
                cluster: clusters.contains(&i.fleet_id),
            });
        }
        Ok(out)
    }
}

/// Locks `m`; a holder that panicked leaves data that is still usable (caches and sets).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
