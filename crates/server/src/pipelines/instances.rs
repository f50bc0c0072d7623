//! The instances loop: SSH-fleet hosts along their life cycle
//! (`dstack_decide::instance::next_action`): a `pending` host is deployed (and retried until
//! dstack's 600 s provisioning timeout; a host added back to its fleet waits until its earlier,
//! `terminating` instance has given it back), `idle`/`busy` hosts get a health check through
//! their tunnel, a `terminating` host is given back and its instance ends `terminated`.
//!
//! Each pass leases the due instances, one lease per instance, and works on each in a task of
//! its own, so one slow or dead host never holds the others back; a task renews its lease while
//! it works (a deploy uploads binaries), so no other pass or server deploys the same host
//! meanwhile. Writes are compare-and-set on the status the task started from: a user's delete
//! during a deploy wins, and the next pass releases the host.

use std::time::Duration;

use dstack_api::fleets::InstanceStatus;
use dstack_db::{DbError, InstanceRow, InstanceStep, InstancesDue};
use dstack_decide::instance::{
    AfterFailedRelease, SshAction, SshInstance, after_failed_release, next_action,
};
use jiff::{SignedDuration, Timestamp};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::{BATCH, LEASE};
use crate::ssh_hosts;
use crate::state::AppState;

/// Leases the due SSH instances and starts a task for each in `tasks`; a task's output is
/// whether it changed the instance's status.
pub(crate) async fn pass(state: &AppState, tasks: &mut JoinSet<bool>) -> Result<(), DbError> {
    let now = Timestamp::now();
    let check = SignedDuration::try_from(state.ssh.check_interval).unwrap_or(SignedDuration::from_secs(5));
    let due = InstancesDue {
        deploy_before: now - dstack_decide::instance::DEPLOY_RETRY,
        check_before: now - check,
        release_before: now - dstack_decide::instance::RELEASE_RETRY,
    };
    for (instance, token) in state.db.lease_ssh_instances(due, BATCH, now, LEASE).await? {
        let state = state.clone();
        tasks.spawn(async move {
            let name = instance.name.clone();
            match with_lease(&state, instance.id, token, one(&state, &instance, token)).await {
                Some(Ok(changed)) => changed,
                Some(Err(e)) => {
                    tracing::error!(instance = %name, error = %e, "instances loop");
                    false
                }
                None => {
                    tracing::warn!(instance = %name, "lost the instance's lease; its step is dropped");
                    false
                }
            }
        });
    }
    Ok(())
}

/// Runs `work` while renewing the instance's lease; `None` if the lease was lost first.
async fn with_lease<T>(
    state: &AppState,
    id: Uuid,
    token: Uuid,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    let renew = async {
        let every = Duration::try_from(LEASE / 3).unwrap_or(Duration::from_secs(5));
        loop {
            tokio::time::sleep(every).await;
            let until = Timestamp::now() + LEASE;
            match state.db.renew_instance_lease(id, token, until).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, "renewing an instance lease"),
            }
        }
    };
    tokio::select! {
        out = work => Some(out),
        () = renew => None,
    }
}

/// The host an instance stands for, for logs and messages (never its keys).
fn host_of(state: &AppState, i: &InstanceRow) -> String {
    crate::fleets::remote_connection_info(i, &state.cipher).map_or_else(|| i.name.clone(), |r| r.host)
}

async fn one(state: &AppState, i: &InstanceRow, token: Uuid) -> Result<bool, DbError> {
    let now = Timestamp::now();
    let status = InstanceStatus::from_wire(&i.status).unwrap_or(InstanceStatus::Terminated);
    let has_jobs =
        status == InstanceStatus::Terminating && !state.db.instances_with_jobs(&[i.id]).await?.is_empty();
    let host_in_release = status == InstanceStatus::Pending && host_in_release(state, i).await?;
    let snap = SshInstance {
        status,
        created_at: i.created_at,
        has_jobs,
        deployed: i.agent_url.is_some(),
        first_termination_retry_at: i.first_termination_retry_at,
        last_error: i.termination_reason_message.clone(),
        host_in_release,
    };
    let mut step = InstanceStep::of(i);
    step.last_processed_at = Some(now);
    let host = host_of(state, i);
    match next_action(&snap, now) {
        SshAction::Deploy => {
            let started = std::time::Instant::now();
            match ssh_hosts::deploy(state, i).await {
                Ok(d) => {
                    step.status = InstanceStatus::Idle.as_str().to_owned();
                    step.offer = serde_json::to_string(&d.offer).ok();
                    step.job_provisioning_data = serde_json::to_string(&d.job_provisioning_data).ok();
                    step.total_blocks = Some(d.total_blocks);
                    step.agent_url = Some(ssh_hosts::SHIM_URL_ON_HOST.to_owned());
                    step.termination_reason_message = None;
                    step.unreachable = false;
                    step.started_at = Some(Timestamp::now());
                    tracing::info!(instance = %i.name, %host, secs = started.elapsed().as_secs_f64(), "SSH host deployed");
                }
                Err(e) => {
                    tracing::warn!(instance = %i.name, %host, error = %e, "SSH host not deployed; will retry");
                    step.termination_reason_message = Some(e);
                }
            }
        }
        SshAction::Check => {
            let reachable = ssh_hosts::check(state, i).await;
            step.unreachable = reachable.is_err();
            match &reachable {
                Err(e) if !i.unreachable => {
                    tracing::warn!(instance = %i.name, %host, error = %e, "SSH host unreachable")
                }
                Ok(()) if i.unreachable => {
                    tracing::info!(instance = %i.name, %host, "SSH host reachable again")
                }
                _ => {}
            }
            if reachable.is_ok() && status == InstanceStatus::Provisioning {
                step.status = InstanceStatus::Idle.as_str().to_owned();
            }
            if reachable.is_ok()
                && let Err(e) = ssh_hosts::remove_dangling_tasks(state, i).await
            {
                tracing::warn!(instance = %i.name, %host, error = %e, "leftover tasks not removed yet");
            }
        }
        SshAction::Release => match ssh_hosts::release(state, i).await {
            Ok(()) => {
                tracing::info!(instance = %i.name, %host, "SSH host released");
                end(&mut step, now);
            }
            Err(e) => match after_failed_release(&snap, now) {
                AfterFailedRelease::Retry => {
                    tracing::warn!(instance = %i.name, %host, error = %e, "SSH host not released yet; will retry");
                    step.first_termination_retry_at = Some(i.first_termination_retry_at.unwrap_or(now));
                }
                AfterFailedRelease::GiveUp => {
                    tracing::error!(
                        instance = %i.name, %host, error = %e,
                        "giving up releasing the SSH host; remove dstack-shim from it by hand (`systemctl disable --now dstack-shim`, /usr/local/bin/dstack-*, /root/.dstack)"
                    );
                    end(&mut step, now);
                }
            },
        },
        SshAction::Fail { reason, message } => {
            tracing::warn!(instance = %i.name, %host, %message, "SSH host given up");
            step.status = InstanceStatus::Terminated.as_str().to_owned();
            step.termination_reason = Some(reason.to_owned());
            step.termination_reason_message = Some(message);
            step.finished_at = Some(now);
            state.ssh.forget(i.id).await;
        }
        // Due again at the next pass: the release it waits for is quick.
        SshAction::Wait if host_in_release => step.last_processed_at = i.last_processed_at,
        SshAction::Wait => {}
    }
    let changed = step.status != i.status;
    let saved = state.db.save_instance_step(i.id, token, &i.status, &step, now).await?;
    if saved && changed {
        tracing::info!(instance = %i.name, from = %i.status, to = %step.status, "instance status");
    }
    Ok(saved && changed)
}

/// Whether another instance of `i`'s host is `terminating` (a host removed from its fleet and
/// added back before it was given back): deploying now would race the release's uninstall.
async fn host_in_release(state: &AppState, i: &InstanceRow) -> Result<bool, DbError> {
    let Some(rci) = crate::fleets::remote_connection_info(i, &state.cipher) else { return Ok(false) };
    let others = state.db.list_remote_instances().await?;
    Ok(others.iter().any(|o| {
        o.id != i.id
            && o.status == InstanceStatus::Terminating.as_str()
            && crate::fleets::remote_connection_info(o, &state.cipher).is_some_and(|r| r.host == rci.host)
    }))
}

/// The instance ends: `terminated`, finished and deleted (the fleets loop then sees it gone).
fn end(step: &mut InstanceStep, now: Timestamp) {
    step.status = InstanceStatus::Terminated.as_str().to_owned();
    step.finished_at = Some(now);
    step.delete = true;
}
