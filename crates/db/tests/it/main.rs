//! Integration tests of the storage layer: one binary, every test on a real SQLite file in a temp
//! dir and, when `DSTACK_TEST_POSTGRES` names a database, on PostgreSQL too.
//!
//! The PostgreSQL database is shared by all tests (and possibly earlier runs), so every test
//! makes its own names with [`unique`] and asserts exact counts only on SQLite.

mod connect;
mod fleets;
mod members;
mod probes;
mod projects;
mod users;

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

use dstack_db::{Db, DbKind, ProjectRow, UserRow};
use uuid::Uuid;

/// A database for one test body.
#[derive(Clone)]
struct Ctx {
    db: Db,
    /// True when only this test uses the database, so counts and whole lists may be asserted.
    exclusive: bool,
}

fn postgres_url() -> Option<String> {
    std::env::var("DSTACK_TEST_POSTGRES").ok().filter(|url| !url.is_empty())
}

/// Runs `body` on a fresh SQLite file, then on the shared PostgreSQL database if configured.
async fn each_backend<F, Fut>(body: F)
where
    F: Fn(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sqlite.db").display());
    let db = Db::connect(&url).await.unwrap();
    assert_eq!(db.kind(), DbKind::Sqlite);
    body(Ctx { db: db.clone(), exclusive: true }).await;
    db.close().await;

    if let Some(url) = postgres_url() {
        let db = Db::connect(&url).await.unwrap();
        assert_eq!(db.kind(), DbKind::Postgres);
        body(Ctx { db: db.clone(), exclusive: false }).await;
        db.close().await;
    }
}

/// A name no other test or earlier run uses: `<prefix>-<8 hex>-<n>`.
fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let hex = Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}-{}", &hex[..8], N.fetch_add(1, Ordering::Relaxed))
}

/// A timestamp with all six sub-second digits used: `base` seconds plus 123456 µs.
fn ts(seconds: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_microsecond(seconds * 1_000_000 + 123_456).unwrap()
}

fn user(name: &str) -> UserRow {
    UserRow {
        id: Uuid::new_v4(),
        name: name.to_owned(),
        created_at: ts(1_764_000_000),
        global_role: "user".to_owned(),
        email: None,
        active: true,
        token_hash: format!("hash-{}", Uuid::new_v4().simple()),
        token_encrypted: Some("encrypted".to_owned()),
        ssh_public_key: None,
        ssh_private_key: None,
    }
}

async fn new_user(db: &Db, prefix: &str) -> UserRow {
    let u = user(&unique(prefix));
    db.insert_user(&u).await.unwrap();
    u
}

fn project(name: &str, owner: &UserRow) -> ProjectRow {
    ProjectRow {
        id: Uuid::new_v4(),
        name: name.to_owned(),
        owner_id: owner.id,
        created_at: ts(1_764_000_100),
        is_public: false,
    }
}
