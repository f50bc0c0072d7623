use dstack_db::{Db, DbError, ProjectRow, UserRow};
use uuid::Uuid;

use crate::{Ctx, each_backend, new_user, project, unique, user};

/// Three users `a-…`, `b-…`, `c-…` (so name order is a, b, c) and a project owned by `a`.
async fn setup(db: &Db) -> (ProjectRow, UserRow, UserRow, UserRow) {
    let tag = unique("m");
    let mut users = Vec::new();
    for prefix in ["a", "b", "c"] {
        let u = user(&format!("{prefix}-{tag}"));
        db.insert_user(&u).await.unwrap();
        users.push(u);
    }
    let [a, b, c] = <[UserRow; 3]>::try_from(users).unwrap();
    let p = project(&unique("members"), &a);
    db.insert_project(&p, "admin").await.unwrap();
    (p, a, b, c)
}

fn roles(members: Vec<(UserRow, String)>) -> Vec<(Uuid, String)> {
    members.into_iter().map(|(u, role)| (u.id, role)).collect()
}

#[tokio::test]
async fn set_members_replaces_all() {
    each_backend(|Ctx { db, .. }| async move {
        let (p, a, b, c) = setup(&db).await;

        let wanted = vec![(c.id, "manager".to_owned()), (b.id, "user".to_owned())];
        db.set_members(p.id, &wanted).await.unwrap();
        // The owner is not kept implicitly: membership is exactly what was given, by user name.
        assert_eq!(
            roles(db.project_members(p.id).await.unwrap()),
            vec![(b.id, "user".to_owned()), (c.id, "manager".to_owned())]
        );
        assert_eq!(db.member_role(p.id, a.id).await.unwrap(), None);
        assert_eq!(db.member_role(p.id, c.id).await.unwrap().as_deref(), Some("manager"));

        db.set_members(p.id, &[]).await.unwrap();
        assert!(db.project_members(p.id).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn set_members_with_unknown_user_changes_nothing() {
    each_backend(|Ctx { db, .. }| async move {
        let (p, a, b, _) = setup(&db).await;
        let wanted = vec![(b.id, "user".to_owned()), (Uuid::new_v4(), "user".to_owned())];
        assert!(matches!(db.set_members(p.id, &wanted).await, Err(DbError::NotFound)));
        assert_eq!(roles(db.project_members(p.id).await.unwrap()), vec![(a.id, "admin".to_owned())]);
    })
    .await;
}

#[tokio::test]
async fn add_members_upserts_roles() {
    each_backend(|Ctx { db, .. }| async move {
        let (p, a, b, c) = setup(&db).await;

        db.add_members(p.id, &[(b.id, "user".to_owned())]).await.unwrap();
        db.add_members(p.id, &[(b.id, "manager".to_owned()), (c.id, "user".to_owned())]).await.unwrap();
        db.add_members(p.id, &[(a.id, "user".to_owned())]).await.unwrap();
        let members = db.project_members(p.id).await.unwrap();
        assert_eq!(
            members,
            vec![
                (a.clone(), "user".to_owned()),
                (b.clone(), "manager".to_owned()),
                (c.clone(), "user".to_owned()),
            ]
        );

        let ghost_project = Uuid::new_v4();
        assert!(matches!(
            db.add_members(ghost_project, &[(b.id, "user".to_owned())]).await,
            Err(DbError::NotFound)
        ));
        assert!(matches!(
            db.add_members(p.id, &[(Uuid::new_v4(), "user".to_owned())]).await,
            Err(DbError::NotFound)
        ));
    })
    .await;
}

#[tokio::test]
async fn remove_members() {
    each_backend(|Ctx { db, .. }| async move {
        let (p, a, b, c) = setup(&db).await;
        let other = new_user(&db, "other").await;
        let q = project(&unique("other"), &other);
        db.insert_project(&q, "admin").await.unwrap();
        db.add_members(p.id, &[(b.id, "user".to_owned()), (c.id, "user".to_owned())]).await.unwrap();
        db.add_members(q.id, &[(b.id, "user".to_owned())]).await.unwrap();

        db.remove_members(p.id, &[b.id, Uuid::new_v4(), other.id]).await.unwrap();
        assert_eq!(
            roles(db.project_members(p.id).await.unwrap()),
            vec![(a.id, "admin".to_owned()), (c.id, "user".to_owned())]
        );
        // Only this project's membership went.
        assert_eq!(db.member_role(q.id, b.id).await.unwrap().as_deref(), Some("user"));

        db.remove_members(p.id, &[]).await.unwrap();
        assert_eq!(db.project_members(p.id).await.unwrap().len(), 2);
    })
    .await;
}
