//! Turning a database URL into a migrated [`Db`].

use sqlx::AnyConnection;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{Connection, Executor};

use crate::{Db, DbError, DbKind};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long a SQLite connection waits for a lock held by another connection.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

pub(crate) async fn connect(url: &str) -> Result<Db, DbError> {
    sqlx::any::install_default_drivers();
    let target = parse_url(url)?;
    let (pool, writer) = match &target {
        Target::Postgres { url } => {
            let pool = AnyPoolOptions::new().connect(url).await?;
            (pool.clone(), pool)
        }
        Target::SqliteMemory { url } => {
            // Every connection to a shared in-memory database must stay open, or its data is
            // gone; one connection also serialises all access, as SQLite would anyway.
            let pool = one_lasting_connection(sqlite_pool_options(Access::ReadWrite)).connect(url).await?;
            (pool.clone(), pool)
        }
        Target::SqliteFile { url, path } => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(sqlx::Error::Io)?;
            }
            // The journal mode is stored in the file, so setting it once is enough; doing it
            // before the pool exists avoids racing other connections for the exclusive lock.
            let mut conn = AnyConnection::connect(url).await?;
            conn.execute("PRAGMA journal_mode = WAL").await?;
            conn.close().await?;
            // One writing connection (see `Db`), kept open so the WAL files stay in place for
            // the readers.
            let writer = one_lasting_connection(sqlite_pool_options(Access::ReadWrite)).connect(url).await?;
            let readers = sqlite_pool_options(Access::ReadOnly).connect(url).await?;
            (readers, writer)
        }
    };
    MIGRATOR.run(&writer).await?;
    let kind = match target {
        Target::Postgres { .. } => DbKind::Postgres,
        Target::SqliteMemory { .. } | Target::SqliteFile { .. } => DbKind::Sqlite,
    };
    Ok(Db { pool, writer, kind })
}

/// A pool of exactly one connection that is never closed for being idle or old.
fn one_lasting_connection(options: AnyPoolOptions) -> AnyPoolOptions {
    options.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
}

/// What a SQLite pool's connections may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    ReadWrite,
    /// `PRAGMA query_only`: any statement that would change the database fails.
    ReadOnly,
}

fn sqlite_pool_options(access: Access) -> AnyPoolOptions {
    // A SQLite connection cannot drop the way a network one can, so the pool hands it out
    // without the ping (a round trip to the connection's thread before every statement).
    AnyPoolOptions::new().test_before_acquire(false).after_connect(move |conn, _meta| {
        Box::pin(async move {
            if access == Access::ReadOnly {
                conn.execute("PRAGMA query_only = ON").await?;
            }
            conn.execute("PRAGMA foreign_keys = ON").await?;
            // With WAL, NORMAL syncs at checkpoints, not on every commit: a killed server
            // loses nothing committed; only an OS crash or power loss can drop the last
            // transactions (the file stays consistent).
            conn.execute("PRAGMA synchronous = NORMAL").await?;
            let busy = format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}");
            conn.execute(sqlx::AssertSqlSafe(busy)).await?;
            Ok(())
        })
    })
}

/// A database URL in the spelling sqlx understands.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Postgres { url: String },
    SqliteMemory { url: String },
    SqliteFile { url: String, path: std::path::PathBuf },
}

fn parse_url(url: &str) -> Result<Target, sqlx::Error> {
    if let Some(rest) = url.strip_prefix("postgresql+asyncpg://") {
        return Ok(Target::Postgres { url: format!("postgres://{rest}") });
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Target::Postgres { url: url.to_owned() });
    }
    // SQLAlchemy: `sqlite+aiosqlite:///rel.db`, `sqlite+aiosqlite:////abs.db`, and an empty path
    // for an in-memory database. sqlx: `sqlite://rel.db`, `sqlite:///abs.db`.
    let sqlite_rest = if let Some(rest) = url.strip_prefix("sqlite+aiosqlite://") {
        let path = rest.strip_prefix('/').unwrap_or(rest);
        if path.is_empty() { ":memory:" } else { path }
    } else if let Some(rest) = url.strip_prefix("sqlite://") {
        rest
    } else if let Some(rest) = url.strip_prefix("sqlite:") {
        rest
    } else {
        let scheme = url.split(':').next().unwrap_or_default();
        return Err(sqlx::Error::Configuration(
            format!(
                "unsupported database url scheme `{scheme}`: use sqlite://<path> or postgres://<user>:<password>@<host>:<port>/<db>"
            )
            .into(),
        ));
    };
    let (path, params) = match sqlite_rest.split_once('?') {
        Some((path, params)) => (path, Some(params)),
        None => (sqlite_rest, None),
    };
    let mode = params.into_iter().flat_map(|p| p.split('&')).find_map(|kv| kv.strip_prefix("mode="));
    if path.is_empty() || path == ":memory:" || mode == Some("memory") {
        // sqlx parses the URL with `url` first, which rejects `sqlite://:memory:`.
        let url = match params {
            Some(params) => format!("sqlite://?{params}"),
            None => "sqlite::memory:".to_owned(),
        };
        return Ok(Target::SqliteMemory { url });
    }
    // An absolute path keeps `url` from taking a relative path's first segment for a host name
    // (and lowercasing it).
    let path = std::path::absolute(path).map_err(sqlx::Error::Io)?;
    let encoded = escape_path(&path.to_string_lossy());
    let url = match (params, mode) {
        (None, _) => format!("sqlite://{encoded}?mode=rwc"),
        (Some(params), None) => format!("sqlite://{encoded}?{params}&mode=rwc"),
        (Some(params), Some(_)) => format!("sqlite://{encoded}?{params}"),
    };
    Ok(Target::SqliteFile { url, path })
}

/// Percent-encodes the characters that would end or corrupt the path part of a URL;
/// sqlx decodes the path again.
fn escape_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            ' ' => out.push_str("%20"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file target; a relative `path` is taken from the current directory.
    fn file(path: &str, query: &str) -> Target {
        let path = std::path::absolute(path).unwrap();
        Target::SqliteFile { url: format!("sqlite://{}?{query}", path.display()), path }
    }

    fn memory(url: &str) -> Target {
        Target::SqliteMemory { url: url.to_owned() }
    }

    fn pg(url: &str) -> Target {
        Target::Postgres { url: url.to_owned() }
    }

    #[test]
    fn url_spellings() {
        let cases = [
            ("sqlite:///abs/sqlite.db", file("/abs/sqlite.db", "mode=rwc")),
            ("sqlite://rel.db", file("rel.db", "mode=rwc")),
            ("sqlite:rel.db", file("rel.db", "mode=rwc")),
            ("sqlite://Dir/x.db?mode=ro", file("Dir/x.db", "mode=ro")),
            ("sqlite://x.db?cache=shared", file("x.db", "cache=shared&mode=rwc")),
            ("sqlite::memory:", memory("sqlite::memory:")),
            ("sqlite://?mode=memory", memory("sqlite://?mode=memory")),
            (
                "sqlite+aiosqlite:////root/.dstack/server/data/sqlite.db",
                file("/root/.dstack/server/data/sqlite.db", "mode=rwc"),
            ),
            ("sqlite+aiosqlite:///rel.db", file("rel.db", "mode=rwc")),
            ("sqlite+aiosqlite://", memory("sqlite::memory:")),
            ("sqlite+aiosqlite:///:memory:", memory("sqlite::memory:")),
            ("postgres://u:p@h:5432/db", pg("postgres://u:p@h:5432/db")),
            ("postgresql://u:p@h/db", pg("postgresql://u:p@h/db")),
            ("postgresql+asyncpg://u:p@h:5432/db", pg("postgres://u:p@h:5432/db")),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_url(input).unwrap(), expected, "{input}");
        }
    }

    #[test]
    fn odd_characters_in_paths_are_escaped() {
        let target = parse_url("sqlite:///tmp/a b/100%/x#1.db").unwrap();
        let Target::SqliteFile { url, path } = target else { panic!("{target:?}") };
        assert_eq!(url, "sqlite:///tmp/a%20b/100%25/x%231.db?mode=rwc");
        assert_eq!(path, std::path::Path::new("/tmp/a b/100%/x#1.db"));
    }

    #[test]
    fn unsupported_scheme() {
        let err = parse_url("mysql://u@h/db").unwrap_err();
        assert!(err.to_string().contains("unsupported database url scheme `mysql`"), "{err}");
    }

    /// On a SQLite file, reads and writes go through separate pools; the read connections
    /// refuse to change the database, so a write sent to the wrong pool fails in the tests.
    #[tokio::test]
    async fn sqlite_file_readers_are_query_only_and_the_writer_writes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("sqlite.db").display());
        let db = connect(&url).await.unwrap();
        let write = "CREATE TABLE scratch (x BIGINT)";
        let err = sqlx::query(write).execute(&db.pool).await.unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
        sqlx::query(write).execute(&db.writer).await.unwrap();
        sqlx::query("INSERT INTO scratch (x) VALUES (1)").execute(&db.writer).await.unwrap();
        // Committed writes are visible to the readers at once.
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM scratch").fetch_one(&db.pool).await.unwrap();
        assert_eq!(n, 1);
        db.close().await;
    }
}
