//! The fleets loop: fleets and their instances along their life cycle
//! (`dstack_decide::fleet::decide`): terminating instances end `terminated`, cloud instances
//! find no offers (there are no backends), consolidation keeps `nodes.min`, and a deleted
//! fleet with nothing left goes away.
//!
//! SSH instances are the instances loop's (`instances.rs`): it deploys pending hosts and gives
//! terminating ones back; this loop deletes their fleet once they are gone.

use dstack_api::fleets::{FleetSpec, FleetStatus};
use dstack_db::{DbError, FleetPassWrite, FleetRow, InstanceTransition};
use dstack_decide::fleet::{FleetSnapshot, decide};

use crate::state::AppState;

/// One pass over every live fleet whose lease is free; returns whether anything changed.
pub(crate) async fn pass(state: &AppState) -> Result<bool, DbError> {
    let now = jiff::Timestamp::now();
    let (fleets, token) = state.db.lease_fleets(super::BATCH, now, super::LEASE).await?;
    let mut changed = false;
    for fleet in &fleets {
        match one(state, fleet, token, now).await {
            Ok(c) => changed |= c,
            Err(e) => tracing::error!(fleet = %fleet.name, error = %e, "fleets loop"),
        }
    }
    // A pass that leased nothing has no lease to end (and takes no write lock for it).
    if !fleets.is_empty() {
        state.db.release_fleets(token).await?;
    }
    Ok(changed)
}

async fn one(
    state: &AppState,
    fleet: &FleetRow,
    token: uuid::Uuid,
    now: jiff::Timestamp,
) -> Result<bool, DbError> {
    let spec: Option<FleetSpec> = serde_json::from_str(&fleet.spec)
        .inspect_err(|e| tracing::error!(fleet = %fleet.name, error = %e, "stored fleet spec does not parse"))
        .ok();
    let instances = state.db.fleet_instances(fleet.id).await?;
    let snap = FleetSnapshot {
        status: FleetStatus::from_wire(&fleet.status).unwrap_or(FleetStatus::Active),
        nodes: spec.as_ref().and_then(|s| s.configuration.nodes),
        autocreated: spec.as_ref().is_some_and(|s| s.autocreated),
        created_at: fleet.created_at,
        consolidation_attempt: fleet.consolidation_attempt,
        last_consolidated_at: fleet.last_consolidated_at,
        active_runs: state.db.count_fleet_runs_not_in(fleet.id, crate::fleets::FINISHED_RUN_STATUSES).await?,
        instances: crate::fleets::instance_snapshots(state, &instances).await?,
    };
    let plan = decide(&snap, now);
    let blocks = spec.as_ref().map(|s| s.configuration.blocks).unwrap_or_default();
    let write = FleetPassWrite {
        transitions: plan
            .transitions
            .iter()
            .map(|t| InstanceTransition {
                id: t.id,
                from: t.from.as_str().to_owned(),
                to: t.to.as_str().to_owned(),
                delete: t.delete,
                finish: t.finish,
                termination: t.termination.as_ref().map(|(r, m)| ((*r).to_owned(), m.clone())),
            })
            .collect(),
        new_instances: plan
            .new_instance_nums
            .iter()
            .map(|num| {
                let slot = crate::fleets::InstanceSlot {
                    project_id: fleet.project_id,
                    fleet_id: fleet.id,
                    fleet_name: &fleet.name,
                    num: *num,
                    now,
                };
                crate::fleets::cloud_instance_row(&slot, blocks)
            })
            .collect(),
        consolidation: plan.consolidation_attempt.map(|a| (a, now)),
        delete_fleet: plan.delete_fleet,
    };
    let changed = !write.transitions.is_empty() || !write.new_instances.is_empty() || write.delete_fleet;
    if !state.db.save_fleet_pass(fleet.id, token, &write, now).await? {
        tracing::warn!(fleet = %fleet.name, "lost the fleet's lease; the pass is dropped");
        return Ok(false);
    }
    if write.delete_fleet {
        tracing::info!(fleet = %fleet.name, "fleet terminated");
    }
    Ok(changed)
}
