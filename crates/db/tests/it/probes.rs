//! Readiness probes: first states stored once, due probes claimed by moving `due` (a lease),
//! outcomes written only under that lease, and the replica's registration, which the jobs
//! loop's `save_job` never overwrites.

use dstack_db::{Db, JobRow, ProbeRow, RunRow, SaveJob};
use uuid::Uuid;

use crate::{each_backend, new_user, project, ts, unique};

/// A service run (or a task, `service: false`) with one running job; returns the job.
async fn running_job(db: &Db, service: bool) -> JobRow {
    let owner = new_user(db, "probe-owner").await;
    let p = project(&unique("probes"), &owner);
    db.insert_project(&p, "admin").await.unwrap();
    let run = RunRow {
        id: Uuid::new_v4(),
        project_id: p.id,
        user_id: owner.id,
        repo_id: None,
        run_name: "svc".to_owned(),
        submitted_at: ts(1_764_000_400),
        last_processed_at: ts(1_764_000_400),
        status: "running".to_owned(),
        termination_reason: None,
        resubmission_attempt: 0,
        run_spec: "{}".to_owned(),
        priority: 0,
        deployment_num: 0,
        fleet_id: None,
        next_triggered_at: None,
        deleted: false,
        service_spec: service.then(|| r#"{"url": "/proxy/services/p/svc/"}"#.to_owned()),
        desired_replica_counts: None,
    };
    let job = JobRow {
        id: Uuid::new_v4(),
        project_id: p.id,
        run_id: run.id,
        run_name: "svc".to_owned(),
        job_num: 0,
        replica_num: 0,
        submission_num: 0,
        deployment_num: 0,
        job_name: "svc-0-0".to_owned(),
        submitted_at: ts(1_764_000_400),
        last_processed_at: ts(1_764_000_400),
        finished_at: None,
        status: "running".to_owned(),
        termination_reason: None,
        termination_reason_message: None,
        exit_status: None,
        job_spec: r#"{"probes": []}"#.to_owned(),
        job_provisioning_data: None,
        job_runtime_data: None,
        instance_id: None,
        runner_timestamp: None,
        remove_at: None,
        graceful_termination_attempts: None,
        image_pull_progress: None,
        inactivity_secs: None,
        drain_started_at: None,
    };
    db.insert_run(&run, std::slice::from_ref(&job)).await.unwrap();
    job
}

fn probe(job: &JobRow, probe_num: i64, due: jiff::Timestamp) -> ProbeRow {
    ProbeRow { job_id: job.id, probe_num, success_streak: 0, due, active: true }
}

#[tokio::test]
async fn probes_are_claimed_by_their_due_time_and_written_under_that_claim() {
    each_backend(|cx| async move {
        let db = cx.db;
        let job = running_job(&db, true).await;
        let (t0, t1) = (ts(1_764_000_500), ts(1_764_000_600));
        db.insert_probes(&[probe(&job, 0, t0), probe(&job, 1, t1)]).await.unwrap();
        // Stored once: a second first state changes nothing.
        db.insert_probes(&[ProbeRow { success_streak: 7, ..probe(&job, 0, t1) }]).await.unwrap();
        assert_eq!(db.probes_of_jobs(&[job.id]).await.unwrap(), [probe(&job, 0, t0), probe(&job, 1, t1)]);

        let mine = |rows: Vec<ProbeRow>| -> Vec<i64> {
            rows.into_iter().filter(|p| p.job_id == job.id).map(|p| p.probe_num).collect()
        };
        assert_eq!(mine(db.due_probes(t0, 1000).await.unwrap()), [0], "only probe 0 is due at t0");
        assert_eq!(mine(db.due_probes(t1, 1000).await.unwrap()), [0, 1], "the longest due first");

        // Claimed once: the second claim of the same due time loses.
        let lease = ts(1_764_000_580);
        assert!(db.claim_probe(&probe(&job, 0, t0), t0, lease).await.unwrap());
        assert!(!db.claim_probe(&probe(&job, 0, t0), t0, lease).await.unwrap());
        assert_eq!(mine(db.due_probes(ts(1_764_000_550), 1000).await.unwrap()), Vec::<i64>::new());

        // The outcome is written under the claim; a write with a stale due time is dropped.
        let done = ProbeRow { success_streak: 1, due: ts(1_764_000_615), ..probe(&job, 0, t0) };
        assert!(!db.save_probe(&done, t0).await.unwrap(), "stale");
        assert!(db.save_probe(&done, lease).await.unwrap());
        let inactive = ProbeRow { active: false, ..probe(&job, 1, t1) };
        assert!(db.save_probe(&inactive, t1).await.unwrap());
        assert_eq!(db.probes_of_jobs(&[job.id]).await.unwrap(), [done, inactive]);
        assert_eq!(
            mine(db.due_probes(ts(1_764_001_000), 1000).await.unwrap()),
            [0],
            "inactive probes never run"
        );
        assert!(!db.claim_probe(&inactive, t1, lease).await.unwrap(), "an inactive probe is not claimed");

        // Probes of a job that is gone: not found.
        let ghost = ProbeRow { job_id: Uuid::new_v4(), ..probe(&job, 0, t0) };
        assert!(matches!(db.insert_probes(&[ghost]).await, Err(dstack_db::DbError::NotFound)));
    })
    .await;
}

#[tokio::test]
async fn running_service_replicas_are_registered_and_save_job_keeps_it() {
    each_backend(|cx| async move {
        let db = cx.db;
        let job = running_job(&db, true).await;
        let task = running_job(&db, false).await;
        let waiting: Vec<Uuid> =
            db.unregistered_replicas(10_000).await.unwrap().into_iter().map(|r| r.job_id).collect();
        assert!(waiting.contains(&job.id), "a running service replica waits for registration");
        assert!(!waiting.contains(&task.id), "a task's job is never a replica");
        assert_eq!(db.registered_jobs(&[job.id, task.id]).await.unwrap(), Vec::<Uuid>::new());

        assert!(db.register_replica(job.id).await.unwrap());
        assert_eq!(db.registered_jobs(&[job.id, task.id]).await.unwrap(), [job.id]);
        let waiting: Vec<Uuid> =
            db.unregistered_replicas(10_000).await.unwrap().into_iter().map(|r| r.job_id).collect();
        assert!(!waiting.contains(&job.id));

        // The jobs loop writes the job back: registration and probes stay.
        db.insert_probes(&[ProbeRow { success_streak: 3, ..probe(&job, 0, ts(1_764_000_500)) }])
            .await
            .unwrap();
        let (leased, token) = db
            .lease_jobs(&["running"], 100, ts(1_764_000_700), jiff::SignedDuration::from_secs(20))
            .await
            .unwrap();
        let mut row = leased.into_iter().find(|j| j.id == job.id).expect("the job is leased");
        row.runner_timestamp = Some(42);
        assert_eq!(db.save_job(&row, token, &[], None).await.unwrap(), SaveJob::Saved);
        db.release_jobs(token).await.unwrap();
        assert_eq!(db.registered_jobs(&[job.id]).await.unwrap(), [job.id]);
        assert_eq!(db.probes_of_jobs(&[job.id]).await.unwrap()[0].success_streak, 3);

        // A job that no longer runs is not registered.
        let other = running_job(&db, true).await;
        let (leased, token) = db
            .lease_jobs(&["running"], 100, ts(1_764_000_700), jiff::SignedDuration::from_secs(20))
            .await
            .unwrap();
        let mut row = leased.into_iter().find(|j| j.id == other.id).expect("the job is leased");
        row.status = "terminating".to_owned();
        assert_eq!(db.save_job(&row, token, &[], None).await.unwrap(), SaveJob::Saved);
        db.release_jobs(token).await.unwrap();
        assert!(!db.register_replica(other.id).await.unwrap());
    })
    .await;
}

/// A service's desired replica counts are written with its run, under the run's lease only.
#[tokio::test]
async fn desired_replica_counts_are_saved_under_the_runs_lease() {
    each_backend(|cx| async move {
        let db = cx.db;
        let job = running_job(&db, true).await;
        let run = db.run_by_id(job.run_id).await.unwrap().unwrap();
        assert_eq!(run.desired_replica_counts, None);
        let now = ts(1_764_000_500);
        let (leased, token) =
            db.lease_runs(&["running"], 10_000, now, jiff::SignedDuration::from_secs(30)).await.unwrap();
        let mut next = leased.into_iter().find(|r| r.id == run.id).expect("leased");
        next.desired_replica_counts = Some(r#"{"0":2}"#.to_owned());
        assert!(!db.save_run(&next, Uuid::new_v4(), &[], &[]).await.unwrap(), "another lease");
        assert!(db.save_run(&next, token, &[], &[]).await.unwrap());
        let saved = db.run_by_id(run.id).await.unwrap().unwrap();
        assert_eq!(saved.desired_replica_counts.as_deref(), Some(r#"{"0":2}"#));
    })
    .await;
}

/// A rolling deployment's job marks are written with its run pass, each touching only its
/// own column of an unfinished job; an apply's in-place update is a compare-and-set on
/// `deployment_num` that breaks the runs loop's lease, and a pass never writes the number.
#[tokio::test]
async fn rolling_marks_and_in_place_updates() {
    use dstack_db::JobMark;
    each_backend(|cx| async move {
        let db = cx.db;
        let job = running_job(&db, true).await;
        let run = db.run_by_id(job.run_id).await.unwrap().unwrap();
        // The update: deployment 1, once; a second update from the same view is refused.
        assert!(db.update_run_spec(run.id, 0, r#"{"v":2}"#, 5, Some(r#"{"url":"/x/"}"#)).await.unwrap());
        assert!(!db.update_run_spec(run.id, 0, r#"{"v":3}"#, 5, None).await.unwrap());
        let updated = db.run_by_id(run.id).await.unwrap().unwrap();
        assert_eq!(
            (
                updated.deployment_num,
                updated.run_spec.as_str(),
                updated.priority,
                updated.service_spec.as_deref()
            ),
            (1, r#"{"v":2}"#, 5, Some(r#"{"url":"/x/"}"#))
        );
        // A pass that leased the run before the update writes nothing.
        let now = ts(1_764_000_500);
        let lease = jiff::SignedDuration::from_secs(30);
        let (leased, token) = db.lease_runs(&["running"], 10_000, now, lease).await.unwrap();
        let mut stale = leased.into_iter().find(|r| r.id == run.id).expect("leased");
        assert!(db.update_run_spec(run.id, 1, r#"{"v":3}"#, 5, None).await.unwrap());
        stale.status = "terminating".to_owned();
        assert!(!db.save_run_pass(&stale, token, &[], &[], &[]).await.unwrap(), "the update broke the lease");
        // A pass's marks: the job's deployment and drain start; the run's number stays.
        let (leased, token) = db.lease_runs(&["running"], 10_000, now, lease).await.unwrap();
        let mut next = leased.into_iter().find(|r| r.id == run.id).expect("leased");
        assert_eq!(next.deployment_num, 2);
        next.deployment_num = 0;
        let marks = [
            JobMark::Deployment { job_id: job.id, deployment_num: 2 },
            JobMark::Drain { job_id: job.id, at: ts(1_764_000_600) },
        ];
        assert!(db.save_run_pass(&next, token, &[], &[], &marks).await.unwrap());
        assert_eq!(db.run_by_id(run.id).await.unwrap().unwrap().deployment_num, 2, "not written by a pass");
        let marked = db.job_by_id(job.id).await.unwrap().unwrap();
        assert_eq!((marked.deployment_num, marked.drain_started_at), (2, Some(ts(1_764_000_600))));
        // A drain starts once: a later mark keeps the first time.
        let (_, token) = db.lease_runs(&["running"], 10_000, now, lease).await.unwrap();
        let later = [JobMark::Drain { job_id: job.id, at: ts(1_764_000_900) }];
        assert!(db.save_run_pass(&next, token, &[], &[], &later).await.unwrap());
        let marked = db.job_by_id(job.id).await.unwrap().unwrap();
        assert_eq!(marked.drain_started_at, Some(ts(1_764_000_600)));
    })
    .await;
}
