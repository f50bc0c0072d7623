//! Fleets and instances: creation in one transaction, in-place updates, termination marks,
//! and the fleets loop's lease and compare-and-set writes.

use dstack_db::{Db, DbError, FleetPassWrite, FleetRow, FleetUpdate, InstanceRow, InstanceTransition};
use uuid::Uuid;

use crate::{each_backend, new_user, project, ts, unique};

async fn new_project(db: &Db) -> Uuid {
    let owner = new_user(db, "fleet-owner").await;
    let p = project(&unique("fleets"), &owner);
    db.insert_project(&p, "admin").await.unwrap();
    p.id
}

fn fleet(project_id: Uuid, name: &str) -> FleetRow {
    FleetRow {
        id: Uuid::new_v4(),
        project_id,
        name: name.to_owned(),
        status: "active".to_owned(),
        status_message: None,
        spec: "{}".to_owned(),
        sensitive_spec: Some("aes256gcm:secret".to_owned()),
        created_at: ts(1_764_000_200),
        consolidation_attempt: 0,
        last_consolidated_at: None,
        lock_expires_at: None,
    }
}

fn instance(f: &FleetRow, num: i64, ssh: bool) -> InstanceRow {
    InstanceRow {
        offer: ssh.then(|| "{}".to_owned()),
        job_provisioning_data: ssh.then(|| "{}".to_owned()),
        remote_connection_info: ssh.then(|| format!("aes256gcm:host-{num}")),
        total_blocks: if num == 0 { None } else { Some(2) },
        ..InstanceRow::new(f.project_id, f.id, &f.name, num, "pending", ts(1_764_000_300))
    }
}

#[tokio::test]
async fn fleets_with_instances_round_trip_and_update_in_place() {
    each_backend(|cx| async move {
        let db = cx.db;
        let p = new_project(&db).await;
        let f = fleet(p, "ssh");
        let rows = vec![instance(&f, 0, true), instance(&f, 1, true)];
        db.insert_fleet(&f, &rows).await.unwrap();
        assert!(matches!(db.insert_fleet(&fleet(p, "ssh"), &[]).await, Err(DbError::Conflict { .. })));
        // The other test's lease takes every fleet of the shared PostgreSQL database, this one
        // too, so the lease is left out of the comparison.
        let listed: Vec<FleetRow> = db
            .list_fleets(p)
            .await
            .unwrap()
            .into_iter()
            .map(|row| FleetRow { lock_expires_at: None, ..row })
            .collect();
        assert_eq!(listed, vec![f.clone()]);
        assert_eq!(db.fleet_instances(f.id).await.unwrap(), rows);
        let remote = db.list_remote_instances().await.unwrap();
        assert!(rows.iter().all(|r| remote.contains(r)));

        // In place: a host added, one marked terminating, the spec replaced.
        let added = instance(&f, 2, true);
        let update = FleetUpdate {
            fleet_id: f.id,
            spec: "{\"v\":2}",
            sensitive_spec: None,
            new_instances: std::slice::from_ref(&added),
            terminate: &[rows[0].id],
            reason: "terminated_by_user",
        };
        // (Later than any lease the other test takes on the shared PostgreSQL database.)
        db.update_fleet(&update, ts(1_764_100_000)).await.unwrap();
        let got = db.fleet_instances(f.id).await.unwrap();
        assert_eq!(
            got.iter().map(|i| i.status.as_str()).collect::<Vec<_>>(),
            ["terminating", "pending", "pending"]
        );
        assert_eq!(got[0].termination_reason.as_deref(), Some("terminated_by_user"));
        let stored = db.fleet_by_id(f.id).await.unwrap().unwrap();
        assert_eq!((stored.spec.as_str(), stored.sensitive_spec), ("{\"v\":2}", None));

        // A whole fleet: terminating, with every instance.
        let ids: Vec<Uuid> = got.iter().map(|i| i.id).collect();
        db.terminate_instances(&[f.id], &ids, "terminated_by_user", ts(1_764_000_500)).await.unwrap();
        assert_eq!(db.fleet_by_id(f.id).await.unwrap().unwrap().status, "terminating");
        assert!(db.fleet_instances(f.id).await.unwrap().iter().all(|i| i.status == "terminating"));
    })
    .await;
}

#[tokio::test]
async fn the_fleets_loop_writes_only_under_its_lease() {
    each_backend(|cx| async move {
        let db = cx.db;
        let p = new_project(&db).await;
        let f = fleet(p, "cloud");
        let rows = vec![instance(&f, 0, false), instance(&f, 1, false)];
        db.insert_fleet(&f, &rows).await.unwrap();
        let now = ts(1_764_001_000);
        let lease = jiff::SignedDuration::from_secs(20);
        let (leased, token) = db.lease_fleets(1000, now, lease).await.unwrap();
        assert!(leased.iter().any(|l| l.id == f.id));
        let (again, _) = db.lease_fleets(1000, now, lease).await.unwrap();
        assert!(!again.iter().any(|l| l.id == f.id), "a leased fleet is not leased twice");
        // An update meanwhile is refused (dstack: the fleet is being processed).
        let update = FleetUpdate {
            fleet_id: f.id,
            spec: "{}",
            sensitive_spec: None,
            new_instances: &[],
            terminate: &[],
            reason: "x",
        };
        assert!(matches!(db.update_fleet(&update, now).await, Err(DbError::NotFound)));

        let write = FleetPassWrite {
            transitions: vec![
                InstanceTransition {
                    id: rows[0].id,
                    from: "pending".to_owned(),
                    to: "terminated".to_owned(),
                    delete: false,
                    finish: true,
                    termination: Some(("no_offers".to_owned(), Some("No offers found".to_owned()))),
                },
                // Not in the status the loop saw: skipped.
                InstanceTransition {
                    id: rows[1].id,
                    from: "idle".to_owned(),
                    to: "terminating".to_owned(),
                    delete: false,
                    finish: false,
                    termination: None,
                },
            ],
            new_instances: vec![instance(&f, 2, false)],
            consolidation: Some((1, now)),
            delete_fleet: true,
        };
        assert!(
            !db.save_fleet_pass(f.id, Uuid::new_v4(), &write, now).await.unwrap(),
            "a stale token writes nothing"
        );
        assert!(db.save_fleet_pass(f.id, token, &write, now).await.unwrap());
        let got = db.fleet_instances(f.id).await.unwrap();
        assert_eq!(
            got.iter().map(|i| i.status.as_str()).collect::<Vec<_>>(),
            ["terminated", "pending", "pending"]
        );
        assert_eq!(got[0].termination_reason_message.as_deref(), Some("No offers found"));
        assert_eq!(got[0].finished_at, Some(now));
        let stored = db.fleet_by_id(f.id).await.unwrap().unwrap();
        assert_eq!(
            (stored.status.as_str(), stored.consolidation_attempt),
            ("active", 1),
            "live instances keep it"
        );
        assert_eq!(stored.lock_expires_at, None, "the lease ended");

        // Every instance deleted: the fleet goes with them.
        let (_, token) = db.lease_fleets(1000, now, lease).await.unwrap();
        let write = FleetPassWrite {
            transitions: got
                .iter()
                .map(|i| InstanceTransition {
                    id: i.id,
                    from: i.status.clone(),
                    to: "terminated".to_owned(),
                    delete: true,
                    finish: true,
                    termination: None,
                })
                .collect(),
            delete_fleet: true,
            ..FleetPassWrite::default()
        };
        assert!(db.save_fleet_pass(f.id, token, &write, now).await.unwrap());
        assert!(db.fleet_instances(f.id).await.unwrap().is_empty());
        assert!(!db.list_fleets(p).await.unwrap().iter().any(|l| l.id == f.id));
        assert_eq!(db.fleet_by_id(f.id).await.unwrap().unwrap().status, "terminated");
    })
    .await;
}
