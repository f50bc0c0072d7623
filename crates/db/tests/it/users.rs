use dstack_db::DbError;

use crate::{Ctx, each_backend, new_user, project, ts, unique, user};

#[tokio::test]
async fn insert_and_look_up() {
    each_backend(|Ctx { db, .. }| async move {
        let mut u = user(&unique("alice"));
        u.email = Some("alice@example.com".to_owned());
        u.global_role = "admin".to_owned();
        u.ssh_public_key = Some("ssh-ed25519 AAAA".to_owned());
        u.ssh_private_key = Some("-----BEGIN OPENSSH PRIVATE KEY-----".to_owned());
        db.insert_user(&u).await.unwrap();

        assert_eq!(db.user_by_name(&u.name).await.unwrap(), Some(u.clone()));
        assert_eq!(db.user_by_id(u.id).await.unwrap(), Some(u.clone()));
        assert_eq!(db.user_by_token_hash(&u.token_hash).await.unwrap(), Some(u.clone()));

        assert_eq!(db.user_by_name(&unique("nobody")).await.unwrap(), None);
        assert_eq!(db.user_by_id(uuid::Uuid::new_v4()).await.unwrap(), None);
        assert_eq!(db.user_by_token_hash("no-such-hash").await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn timestamps_are_exact_to_the_microsecond() {
    each_backend(|Ctx { db, .. }| async move {
        let cases = [
            jiff::Timestamp::from_microsecond(1_764_000_000_123_456).unwrap(),
            jiff::Timestamp::from_microsecond(1).unwrap(),
            jiff::Timestamp::from_microsecond(-1_000_001).unwrap(),
            jiff::Timestamp::from_microsecond(4_102_444_799_999_999).unwrap(),
        ];
        for created_at in cases {
            let mut u = user(&unique("time"));
            u.created_at = created_at;
            db.insert_user(&u).await.unwrap();
            let got = db.user_by_name(&u.name).await.unwrap().unwrap();
            assert_eq!(got.created_at, created_at);
        }

        // Finer digits than microseconds are dropped.
        let mut u = user(&unique("nanos"));
        u.created_at = jiff::Timestamp::new(1_764_000_000, 123_456_789).unwrap();
        db.insert_user(&u).await.unwrap();
        let got = db.user_by_name(&u.name).await.unwrap().unwrap();
        assert_eq!(got.created_at, jiff::Timestamp::new(1_764_000_000, 123_456_000).unwrap());
    })
    .await;
}

#[tokio::test]
async fn duplicate_name_or_token_conflicts() {
    each_backend(|Ctx { db, .. }| async move {
        let u = new_user(&db, "dup").await;

        let mut same_name = user(&u.name);
        same_name.id = uuid::Uuid::new_v4();
        match db.insert_user(&same_name).await {
            Err(DbError::Conflict { what }) => assert_eq!(what, format!("user name {:?}", u.name)),
            other => panic!("expected a conflict, got {other:?}"),
        }

        let mut same_token = user(&unique("dup"));
        same_token.token_hash = u.token_hash.clone();
        match db.insert_user(&same_token).await {
            Err(DbError::Conflict { what }) => assert_eq!(what, "user token"),
            other => panic!("expected a conflict, got {other:?}"),
        }

        let other = new_user(&db, "dup").await;
        match db.set_user_token(&other.name, &u.token_hash, "enc").await {
            Err(DbError::Conflict { what }) => assert_eq!(what, "user token"),
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(db.user_by_name(&other.name).await.unwrap(), Some(other));
    })
    .await;
}

#[tokio::test]
async fn list_and_count() {
    each_backend(|Ctx { db, exclusive }| async move {
        let before = db.count_users().await.unwrap();
        let mut a = user(&unique("list-a"));
        a.created_at = ts(1_764_000_001);
        let mut b = user(&unique("list-b"));
        b.created_at = ts(1_764_000_003);
        let mut c = user(&unique("list-c"));
        c.created_at = ts(1_764_000_002);
        // Same created_at as `c`: the id breaks the tie, descending.
        let mut d = user(&unique("list-d"));
        d.created_at = c.created_at;
        for u in [&a, &b, &c, &d] {
            db.insert_user(u).await.unwrap();
        }

        let (hi, lo) = if c.id > d.id { (&c, &d) } else { (&d, &c) };
        let expected = vec![b.clone(), hi.clone(), lo.clone(), a.clone()];
        let ours: Vec<_> = db
            .list_users()
            .await
            .unwrap()
            .into_iter()
            .filter(|u| [&a, &b, &c, &d].iter().any(|x| x.id == u.id))
            .collect();
        assert_eq!(ours, expected);

        let after = db.count_users().await.unwrap();
        if exclusive {
            assert_eq!((before, after), (0, 4));
            assert_eq!(db.list_users().await.unwrap(), expected);
        } else {
            // Other tests share this database and delete users concurrently, so only the
            // users this test inserted can be counted on.
            assert!(after >= 4, "{before} -> {after}");
        }
    })
    .await;
}

#[tokio::test]
async fn update_user_and_keys() {
    each_backend(|Ctx { db, .. }| async move {
        let u = new_user(&db, "upd").await;

        let updated = db.update_user(&u.name, "admin", Some("u@example.com"), false).await.unwrap().unwrap();
        let mut expected = u.clone();
        expected.global_role = "admin".to_owned();
        expected.email = Some("u@example.com".to_owned());
        expected.active = false;
        assert_eq!(updated, expected);
        assert_eq!(db.user_by_name(&u.name).await.unwrap(), Some(expected.clone()));

        // Inactive users are still found by their token (the caller decides what that means).
        assert_eq!(db.user_by_token_hash(&u.token_hash).await.unwrap(), Some(expected.clone()));

        let cleared = db.update_user(&u.name, "user", None, true).await.unwrap().unwrap();
        assert_eq!((cleared.email, cleared.active), (None, true));

        assert_eq!(db.update_user(&unique("nobody"), "user", None, true).await.unwrap(), None);

        let new_hash = format!("rotated-{}", uuid::Uuid::new_v4().simple());
        let rotated = db.set_user_token(&u.name, &new_hash, "enc-rotated").await.unwrap().unwrap();
        assert_eq!(rotated.token_hash, new_hash);
        assert_eq!(db.user_by_token_hash(&u.token_hash).await.unwrap(), None);
        assert_eq!(db.user_by_token_hash(&new_hash).await.unwrap().unwrap().id, u.id);
        assert_eq!(db.set_user_token(&unique("nobody"), "x", "y").await.unwrap(), None);

        db.set_user_ssh_keys(u.id, "ssh-rsa PUB", "PRIVATE").await.unwrap();
        let got = db.user_by_id(u.id).await.unwrap().unwrap();
        assert_eq!(got.ssh_public_key.as_deref(), Some("ssh-rsa PUB"));
        assert_eq!(got.ssh_private_key.as_deref(), Some("PRIVATE"));
        assert!(matches!(db.set_user_ssh_keys(uuid::Uuid::new_v4(), "a", "b").await, Err(DbError::NotFound)));
    })
    .await;
}

#[tokio::test]
async fn delete_users_is_soft_and_frees_the_name() {
    each_backend(|Ctx { db, exclusive }| async move {
        let owner = new_user(&db, "del").await;
        let member = new_user(&db, "del").await;
        let keeper = new_user(&db, "del").await;
        let p = project(&unique("del-proj"), &owner);
        db.insert_project(&p, "admin").await.unwrap();
        db.add_members(p.id, &[(member.id, "user".to_owned()), (keeper.id, "user".to_owned())])
            .await
            .unwrap();
        let before = db.count_users().await.unwrap();

        db.delete_users(&[owner.name.clone(), member.name.clone(), unique("nobody")]).await.unwrap();

        for u in [&owner, &member] {
            assert_eq!(db.user_by_name(&u.name).await.unwrap(), None);
            assert_eq!(db.user_by_token_hash(&u.token_hash).await.unwrap(), None);
            assert!(db.list_users().await.unwrap().iter().all(|x| x.id != u.id));
            assert_eq!(db.member_role(p.id, u.id).await.unwrap(), None);
            // Still there by id (it may own projects), renamed and inactive.
            let gone = db.user_by_id(u.id).await.unwrap().unwrap();
            assert!(gone.name.starts_with("_deleted_"), "{}", gone.name);
            assert!(!gone.active);
        }
        if exclusive {
            // Only a database of our own keeps counts still while we look.
            assert_eq!(db.count_users().await.unwrap(), before - 2);
        }
        assert_eq!(db.user_by_name(&keeper.name).await.unwrap(), Some(keeper.clone()));
        let members = db.project_members(p.id).await.unwrap();
        assert_eq!(members, vec![(keeper.clone(), "user".to_owned())]);
        // The project of a deleted owner stays.
        assert_eq!(db.project_by_name(&p.name).await.unwrap(), Some(p.clone()));

        // The name can be taken again.
        let mut again = user(&owner.name);
        again.id = uuid::Uuid::new_v4();
        db.insert_user(&again).await.unwrap();
        assert_eq!(db.user_by_name(&owner.name).await.unwrap(), Some(again));

        // Deleting nothing, or an already deleted user, is fine.
        db.delete_users(&[]).await.unwrap();
        db.delete_users(std::slice::from_ref(&member.name)).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn concurrent_writers_wait_for_each_other() {
    each_backend(|Ctx { db, .. }| async move {
        let tasks: Vec<_> = (0..24)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move {
                    let u = new_user(&db, "conc").await;
                    db.delete_users(std::slice::from_ref(&u.name)).await.unwrap();
                    u
                })
            })
            .collect();
        for task in tasks {
            let u = task.await.unwrap();
            assert_eq!(db.user_by_name(&u.name).await.unwrap(), None);
        }
    })
    .await;
}
