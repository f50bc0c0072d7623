use dstack_db::{Db, DbKind};

use crate::{each_backend, new_user, postgres_url, unique, user};

#[tokio::test]
async fn migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sqlite.db").display());
    let db = Db::connect(&url).await.unwrap();
    let u = new_user(&db, "persist").await;
    db.close().await;

    let db = Db::connect(&url).await.unwrap();
    assert_eq!(db.user_by_name(&u.name).await.unwrap(), Some(u));
    db.close().await;

    if let Some(url) = postgres_url() {
        // Other tests connect (and migrate) concurrently; connecting again changes nothing.
        let db = Db::connect(&url).await.unwrap();
        let u = new_user(&db, "persist").await;
        db.close().await;
        let db = Db::connect(&url).await.unwrap();
        assert_eq!(db.user_by_name(&u.name).await.unwrap(), Some(u));
        db.close().await;
    }
}

#[tokio::test]
async fn every_backend_gets_a_working_db() {
    each_backend(|ctx| async move {
        assert!(ctx.db.list_projects().await.is_ok());
    })
    .await;
}

#[tokio::test]
async fn sqlite_file_and_parent_dirs_are_created_with_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/sqlite.db");
    // dstack's SQLAlchemy spelling: four slashes before an absolute path.
    let db = Db::connect(&format!("sqlite+aiosqlite:///{}", path.display())).await.unwrap();
    assert_eq!(db.kind(), DbKind::Sqlite);
    new_user(&db, "wal").await;
    assert!(path.is_file());
    let wal = dir.path().join("a/b/sqlite.db-wal");
    assert!(wal.is_file(), "no WAL file next to the database");
    db.close().await;
}

#[tokio::test]
async fn sqlite_memory_keeps_its_data() {
    for url in ["sqlite::memory:", "sqlite+aiosqlite://"] {
        let db = Db::connect(url).await.unwrap();
        assert_eq!(db.kind(), DbKind::Sqlite);
        let u = user(&unique("mem"));
        db.insert_user(&u).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(db.user_by_name(&u.name).await.unwrap(), Some(u), "{url}");
        db.close().await;
    }
}

#[tokio::test]
async fn postgres_spellings() {
    let Some(url) = postgres_url() else { return };
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .expect("DSTACK_TEST_POSTGRES starts with postgres://");
    for spelling in [format!("postgresql://{rest}"), format!("postgresql+asyncpg://{rest}")] {
        let db = Db::connect(&spelling).await.unwrap();
        assert_eq!(db.kind(), DbKind::Postgres);
        let u = new_user(&db, "spelling").await;
        assert_eq!(db.user_by_id(u.id).await.unwrap(), Some(u));
        db.close().await;
    }
}

#[tokio::test]
async fn unsupported_url_is_an_error() {
    let err = Db::connect("mysql://root@localhost/db").await.unwrap_err();
    assert!(err.to_string().contains("unsupported database url scheme"), "{err}");
}
