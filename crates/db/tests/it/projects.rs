use dstack_db::DbError;

use crate::{Ctx, each_backend, new_user, project, ts, unique};

#[tokio::test]
async fn insert_adds_the_owner_as_member() {
    each_backend(|Ctx { db, .. }| async move {
        let owner = new_user(&db, "owner").await;
        let mut p = project(&unique("proj"), &owner);
        p.is_public = true;
        db.insert_project(&p, "admin").await.unwrap();

        assert_eq!(db.project_by_name(&p.name).await.unwrap(), Some(p.clone()));
        assert_eq!(db.project_by_name(&unique("nope")).await.unwrap(), None);
        assert_eq!(db.member_role(p.id, owner.id).await.unwrap().as_deref(), Some("admin"));
        assert_eq!(db.project_members(p.id).await.unwrap(), vec![(owner.clone(), "admin".to_owned())]);
    })
    .await;
}

#[tokio::test]
async fn duplicate_name_conflicts_and_changes_nothing() {
    each_backend(|Ctx { db, .. }| async move {
        let owner = new_user(&db, "owner").await;
        let other = new_user(&db, "other").await;
        let p = project(&unique("proj"), &owner);
        db.insert_project(&p, "admin").await.unwrap();

        let dup = project(&p.name, &other);
        match db.insert_project(&dup, "admin").await {
            Err(DbError::Conflict { what }) => assert_eq!(what, format!("project {:?}", p.name)),
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(db.project_by_name(&p.name).await.unwrap(), Some(p.clone()));
        assert!(db.list_projects_for_member(other.id).await.unwrap().is_empty());
        assert_eq!(db.member_role(dup.id, other.id).await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn unknown_owner_is_not_found() {
    each_backend(|Ctx { db, .. }| async move {
        let ghost = crate::user(&unique("ghost"));
        let p = project(&unique("proj"), &ghost);
        assert!(matches!(db.insert_project(&p, "admin").await, Err(DbError::NotFound)));
        assert_eq!(db.project_by_name(&p.name).await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn list_newest_first_and_by_member() {
    each_backend(|Ctx { db, exclusive }| async move {
        let alice = new_user(&db, "alice").await;
        let bob = new_user(&db, "bob").await;
        let mut p1 = project(&unique("p1"), &alice);
        p1.created_at = ts(1_764_000_010);
        let mut p2 = project(&unique("p2"), &bob);
        p2.created_at = ts(1_764_000_030);
        let mut p3 = project(&unique("p3"), &alice);
        p3.created_at = ts(1_764_000_020);
        for p in [&p1, &p2, &p3] {
            db.insert_project(p, "admin").await.unwrap();
        }
        db.add_members(p2.id, &[(alice.id, "user".to_owned())]).await.unwrap();

        let all = db.list_projects().await.unwrap();
        let ours: Vec<_> =
            all.iter().filter(|p| [&p1, &p2, &p3].iter().any(|x| x.id == p.id)).cloned().collect();
        assert_eq!(ours, vec![p2.clone(), p3.clone(), p1.clone()]);
        if exclusive {
            assert_eq!(all, ours);
        }
        assert_eq!(
            db.list_projects_for_member(alice.id).await.unwrap(),
            vec![p2.clone(), p3.clone(), p1.clone()]
        );
        assert_eq!(db.list_projects_for_member(bob.id).await.unwrap(), vec![p2.clone()]);
        assert!(db.list_projects_for_member(uuid::Uuid::new_v4()).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn delete_is_soft_and_frees_the_name() {
    each_backend(|Ctx { db, .. }| async move {
        let owner = new_user(&db, "owner").await;
        let p = project(&unique("gone"), &owner);
        let kept = project(&unique("kept"), &owner);
        db.insert_project(&p, "admin").await.unwrap();
        db.insert_project(&kept, "admin").await.unwrap();

        db.delete_projects(&[p.name.clone(), unique("nope")]).await.unwrap();

        assert_eq!(db.project_by_name(&p.name).await.unwrap(), None);
        assert!(db.list_projects().await.unwrap().iter().all(|x| x.id != p.id));
        assert_eq!(db.list_projects_for_member(owner.id).await.unwrap(), vec![kept.clone()]);
        assert!(matches!(db.set_project_public(p.id, true).await, Err(DbError::NotFound)));

        // The name can be taken again, by a new project.
        let again = project(&p.name, &owner);
        db.insert_project(&again, "admin").await.unwrap();
        assert_eq!(db.project_by_name(&p.name).await.unwrap(), Some(again));

        db.delete_projects(&[]).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn set_public() {
    each_backend(|Ctx { db, .. }| async move {
        let owner = new_user(&db, "owner").await;
        let p = project(&unique("pub"), &owner);
        db.insert_project(&p, "admin").await.unwrap();

        db.set_project_public(p.id, true).await.unwrap();
        assert!(db.project_by_name(&p.name).await.unwrap().unwrap().is_public);
        db.set_project_public(p.id, false).await.unwrap();
        assert!(!db.project_by_name(&p.name).await.unwrap().unwrap().is_public);
        assert!(matches!(db.set_project_public(uuid::Uuid::new_v4(), true).await, Err(DbError::NotFound)));
    })
    .await;
}

#[tokio::test]
async fn the_caller_and_their_project_come_in_one_statement() {
    each_backend(|Ctx { db, .. }| async move {
        let owner = new_user(&db, "owner").await;
        let stranger = new_user(&db, "stranger").await;
        let mut p = project(&unique("proj"), &owner);
        p.is_public = true;
        db.insert_project(&p, "manager").await.unwrap();
        let missing = unique("nope");

        // What the two separate lookups answer.
        let got = db.caller_in_project(&owner.token_hash, &p.name).await.unwrap();
        assert_eq!(got, Some((owner.clone(), Some((p.clone(), Some("manager".to_owned()))))));
        assert_eq!(db.project_by_name(&p.name).await.unwrap(), Some(p.clone()));
        assert_eq!(db.member_role(p.id, owner.id).await.unwrap().as_deref(), Some("manager"));
        let got = db.caller_in_project(&stranger.token_hash, &p.name).await.unwrap();
        assert_eq!(got, Some((stranger.clone(), Some((p.clone(), None)))), "not a member");
        let got = db.caller_in_project(&owner.token_hash, &missing).await.unwrap();
        assert_eq!(got, Some((owner.clone(), None)), "no such project");
        assert_eq!(db.caller_in_project("no-such-hash", &p.name).await.unwrap(), None);

        // A deleted project or user is not found.
        db.delete_projects(std::slice::from_ref(&p.name)).await.unwrap();
        assert_eq!(
            db.caller_in_project(&owner.token_hash, &p.name).await.unwrap(),
            Some((owner.clone(), None))
        );
        db.delete_users(std::slice::from_ref(&stranger.name)).await.unwrap();
        assert_eq!(db.caller_in_project(&stranger.token_hash, &p.name).await.unwrap(), None);
    })
    .await;
}
