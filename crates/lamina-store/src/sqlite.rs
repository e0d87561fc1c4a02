//! The embedded backend: one SQLite database in WAL mode with full fsync on commit, so an
//! acknowledged change survives `kill -9` and power loss. The SQL is plain enough to port to
//! PostgreSQL (TEXT documents, INTEGER keys, no SQLite-only functions).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lamina_core::concurrency::{Allocation, ProvisionedConfig};
use lamina_core::event_invoke::EventInvokeConfig;
use lamina_core::function::{Alias, Function, Version};
use lamina_core::policy::Policy;
use lamina_core::url::UrlConfig;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::from_str;

use crate::{Change, Expect, MetadataStore, Result, StoreError, Usage, VersionCursor, version_seq};

/// Schema migrations, applied in order; `PRAGMA user_version` counts the ones applied.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE functions (
        name        TEXT PRIMARY KEY,
        generation  INTEGER NOT NULL,
        body        TEXT NOT NULL
    );
    CREATE TABLE versions (
        function    TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        seq         INTEGER NOT NULL,
        code_sha256 TEXT NOT NULL,
        code_size   INTEGER NOT NULL,
        body        TEXT NOT NULL,
        PRIMARY KEY (function, seq)
    );
    CREATE TABLE aliases (
        function    TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        body        TEXT NOT NULL,
        PRIMARY KEY (function, name)
    );
    CREATE TABLE policies (
        function    TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        qualifier   TEXT NOT NULL,
        body        TEXT NOT NULL,
        PRIMARY KEY (function, qualifier)
    );
"#,
    r#"
    CREATE TABLE provisioned (
        function    TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        qualifier   TEXT NOT NULL,
        requested   INTEGER NOT NULL,
        body        TEXT NOT NULL,
        PRIMARY KEY (function, qualifier)
    );
"#,
    r#"
    CREATE TABLE urls (
        function    TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        qualifier   TEXT NOT NULL,
        url_id      TEXT NOT NULL UNIQUE,
        body        TEXT NOT NULL,
        PRIMARY KEY (function, qualifier)
    );
"#,
    r#"
    CREATE TABLE event_invoke_configs (
        function    TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        qualifier   TEXT NOT NULL,
        body        TEXT NOT NULL,
        PRIMARY KEY (function, qualifier)
    );
"#,
];

/// A SQLite metadata store. Cheap to clone; all clones share one connection, used from the
/// blocking pool so no async worker waits on an fsync.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn backend(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(err.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        Self::init(conn)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory().map_err(backend)?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        // FULL: the WAL is fsynced at every commit, which is what makes an acknowledged
        // change durable; NORMAL would only protect against application crashes.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(backend)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        let applied: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(backend)?;
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
            let tx = conn.transaction().map_err(backend)?;
            tx.execute_batch(migration).map_err(backend)?;
            tx.pragma_update(None, "user_version", index as i64 + 1)
                .map_err(backend)?;
            tx.commit().map_err(backend)?;
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&mut conn)
        })
        .await
        .map_err(backend)?
    }
}

fn decode<T: serde::de::DeserializeOwned>(body: String) -> Result<T> {
    from_str(&body).map_err(|e| backend(format!("corrupt record: {e}")))
}

fn encode<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("records serialize")
}

fn apply(tx: &rusqlite::Transaction<'_>, function: &str, change: Change) -> rusqlite::Result<()> {
    match change {
        Change::PutFunction(record) => {
            tx.execute(
                "UPDATE functions SET body = ?2 WHERE name = ?1",
                params![function, encode(&record)],
            )?;
        }
        Change::PutVersion(version) => {
            tx.execute(
                "INSERT INTO versions (function, seq, code_sha256, code_size, body)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (function, seq) DO UPDATE SET
                    code_sha256 = excluded.code_sha256, code_size = excluded.code_size,
                    body = excluded.body",
                params![
                    function,
                    version_seq(&version.version) as i64,
                    version.code.sha256,
                    version.code.size as i64,
                    encode(&version)
                ],
            )?;
        }
        Change::DeleteVersion(version) => {
            tx.execute(
                "DELETE FROM versions WHERE function = ?1 AND seq = ?2",
                params![function, version_seq(&version) as i64],
            )?;
        }
        Change::PutAlias(alias) => {
            tx.execute(
                "INSERT INTO aliases (function, name, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (function, name) DO UPDATE SET body = excluded.body",
                params![function, alias.name, encode(&alias)],
            )?;
        }
        Change::DeleteAlias(name) => {
            tx.execute(
                "DELETE FROM aliases WHERE function = ?1 AND name = ?2",
                params![function, name],
            )?;
        }
        Change::PutPolicy(qualifier, policy) => {
            tx.execute(
                "INSERT INTO policies (function, qualifier, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (function, qualifier) DO UPDATE SET body = excluded.body",
                params![function, qualifier, encode(&policy)],
            )?;
        }
        Change::DeletePolicy(qualifier) => {
            tx.execute(
                "DELETE FROM policies WHERE function = ?1 AND qualifier = ?2",
                params![function, qualifier],
            )?;
        }
        Change::PutProvisioned(config) => {
            tx.execute(
                "INSERT INTO provisioned (function, qualifier, requested, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (function, qualifier) DO UPDATE SET
                    requested = excluded.requested, body = excluded.body",
                params![function, config.qualifier, config.requested, encode(&config)],
            )?;
        }
        Change::DeleteProvisioned(qualifier) => {
            tx.execute(
                "DELETE FROM provisioned WHERE function = ?1 AND qualifier = ?2",
                params![function, qualifier],
            )?;
        }
        Change::PutUrl(config) => {
            tx.execute(
                "INSERT INTO urls (function, qualifier, url_id, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (function, qualifier) DO UPDATE SET
                    url_id = excluded.url_id, body = excluded.body",
                params![
                    function,
                    config.qualifier.clone().unwrap_or_default(),
                    config.url_id,
                    encode(&config)
                ],
            )?;
        }
        Change::DeleteUrl(qualifier) => {
            tx.execute(
                "DELETE FROM urls WHERE function = ?1 AND qualifier = ?2",
                params![function, qualifier.unwrap_or_default()],
            )?;
        }
        Change::PutEventInvokeConfig(config) => {
            tx.execute(
                "INSERT INTO event_invoke_configs (function, qualifier, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (function, qualifier) DO UPDATE SET body = excluded.body",
                params![function, config.qualifier, encode(&config)],
            )?;
        }
        Change::DeleteEventInvokeConfig(qualifier) => {
            tx.execute(
                "DELETE FROM event_invoke_configs WHERE function = ?1 AND qualifier = ?2",
                params![function, qualifier],
            )?;
        }
        Change::DeleteFunction => {
            tx.execute("DELETE FROM functions WHERE name = ?1", params![function])?;
        }
    }
    Ok(())
}

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn function(&self, name: &str) -> Result<Option<(Function, u64)>> {
        let name = name.to_owned();
        self.run(move |conn| {
            let row = conn
                .query_row(
                    "SELECT body, generation FROM functions WHERE name = ?1",
                    params![name],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)),
                )
                .optional()
                .map_err(backend)?;
            row.map(|(body, generation)| Ok((decode(body)?, generation as u64)))
                .transpose()
        })
        .await
    }

    async fn version(&self, function: &str, version: &str) -> Result<Option<Version>> {
        let (function, seq) = (function.to_owned(), version_seq(version) as i64);
        if seq == 0 && version != lamina_core::arn::LATEST {
            return Ok(None);
        }
        self.run(move |conn| {
            conn.query_row(
                "SELECT body FROM versions WHERE function = ?1 AND seq = ?2",
                params![function, seq],
                |row| row.get::<_, String>(0),
            )
            .optional()
            .map_err(backend)?
            .map(decode)
            .transpose()
        })
        .await
    }

    async fn versions(&self, function: &str) -> Result<Vec<Version>> {
        let function = function.to_owned();
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT body FROM versions WHERE function = ?1 ORDER BY seq")
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![function], |row| row.get::<_, String>(0))
                .map_err(backend)?;
            rows.map(|body| decode(body.map_err(backend)?)).collect()
        })
        .await
    }

    async fn versions_page(
        &self,
        after: Option<&VersionCursor>,
        latest_only: bool,
        limit: usize,
    ) -> Result<Vec<Version>> {
        let (after_name, after_seq) = match after {
            Some(cursor) => (cursor.function.clone(), cursor.seq as i64),
            None => (String::new(), -1),
        };
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT body FROM versions
                     WHERE (function > ?1 OR (function = ?1 AND seq > ?2))
                       AND (?3 = 0 OR seq = 0)
                     ORDER BY function, seq LIMIT ?4",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(
                    params![after_name, after_seq, latest_only as i64, limit as i64],
                    |row| row.get::<_, String>(0),
                )
                .map_err(backend)?;
            rows.map(|body| decode(body.map_err(backend)?)).collect()
        })
        .await
    }

    async fn alias(&self, function: &str, name: &str) -> Result<Option<Alias>> {
        let (function, name) = (function.to_owned(), name.to_owned());
        self.run(move |conn| {
            conn.query_row(
                "SELECT body FROM aliases WHERE function = ?1 AND name = ?2",
                params![function, name],
                |row| row.get::<_, String>(0),
            )
            .optional()
            .map_err(backend)?
            .map(decode)
            .transpose()
        })
        .await
    }

    async fn aliases(&self, function: &str) -> Result<Vec<Alias>> {
        let function = function.to_owned();
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT body FROM aliases WHERE function = ?1 ORDER BY name")
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![function], |row| row.get::<_, String>(0))
                .map_err(backend)?;
            rows.map(|body| decode(body.map_err(backend)?)).collect()
        })
        .await
    }

    async fn policy(&self, function: &str, qualifier: &str) -> Result<Option<Policy>> {
        let (function, qualifier) = (function.to_owned(), qualifier.to_owned());
        self.run(move |conn| {
            conn.query_row(
                "SELECT body FROM policies WHERE function = ?1 AND qualifier = ?2",
                params![function, qualifier],
                |row| row.get::<_, String>(0),
            )
            .optional()
            .map_err(backend)?
            .map(decode)
            .transpose()
        })
        .await
    }

    async fn provisioned(&self, function: &str) -> Result<Vec<ProvisionedConfig>> {
        let function = function.to_owned();
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT body FROM provisioned WHERE function = ?1 ORDER BY qualifier",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![function], |row| row.get::<_, String>(0))
                .map_err(backend)?;
            rows.map(|body| decode(body.map_err(backend)?)).collect()
        })
        .await
    }

    async fn allocations(&self) -> Result<Vec<Allocation>> {
        self.run(|conn| {
            let mut provisioned: std::collections::BTreeMap<String, u32> = Default::default();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT function, SUM(requested) FROM provisioned GROUP BY function",
                )
                .map_err(backend)?;
            for row in stmt
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })
                .map_err(backend)?
            {
                let (function, total) = row.map_err(backend)?;
                provisioned.insert(function, total as u32);
            }
            let mut allocations = Vec::new();
            let mut stmt = conn
                .prepare_cached("SELECT body FROM functions ORDER BY name")
                .map_err(backend)?;
            for body in stmt
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(backend)?
            {
                let function: Function = decode(body.map_err(backend)?)?;
                let provisioned = provisioned.get(&function.name).copied().unwrap_or(0);
                if function.reserved_concurrency.is_some() || provisioned > 0 {
                    allocations.push(Allocation {
                        function: function.name,
                        reserved: function.reserved_concurrency,
                        provisioned,
                    });
                }
            }
            Ok(allocations)
        })
        .await
    }

    async fn url(&self, function: &str, qualifier: Option<&str>) -> Result<Option<UrlConfig>> {
        let (function, qualifier) = (function.to_owned(), qualifier.unwrap_or("").to_owned());
        self.run(move |conn| {
            conn.query_row(
                "SELECT body FROM urls WHERE function = ?1 AND qualifier = ?2",
                params![function, qualifier],
                |row| row.get::<_, String>(0),
            )
            .optional()
            .map_err(backend)?
            .map(decode)
            .transpose()
        })
        .await
    }

    async fn urls(&self, function: &str) -> Result<Vec<UrlConfig>> {
        let function = function.to_owned();
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT body FROM urls WHERE function = ?1 ORDER BY qualifier")
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![function], |row| row.get::<_, String>(0))
                .map_err(backend)?;
            rows.map(|body| decode(body.map_err(backend)?)).collect()
        })
        .await
    }

    async fn url_by_id(&self, url_id: &str) -> Result<Option<(String, UrlConfig)>> {
        let url_id = url_id.to_owned();
        self.run(move |conn| {
            let row = conn
                .query_row(
                    "SELECT function, body FROM urls WHERE url_id = ?1",
                    params![url_id],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
                )
                .optional()
                .map_err(backend)?;
            row.map(|(function, body)| Ok((function, decode(body)?)))
                .transpose()
        })
        .await
    }

    async fn event_invoke_config(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<Option<EventInvokeConfig>> {
        let (function, qualifier) = (function.to_owned(), qualifier.to_owned());
        self.run(move |conn| {
            conn.query_row(
                "SELECT body FROM event_invoke_configs WHERE function = ?1 AND qualifier = ?2",
                params![function, qualifier],
                |row| row.get::<_, String>(0),
            )
            .optional()
            .map_err(backend)?
            .map(decode)
            .transpose()
        })
        .await
    }

    async fn event_invoke_configs(&self, function: &str) -> Result<Vec<EventInvokeConfig>> {
        let function = function.to_owned();
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT body FROM event_invoke_configs WHERE function = ?1 ORDER BY qualifier",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![function], |row| row.get::<_, String>(0))
                .map_err(backend)?;
            rows.map(|body| decode(body.map_err(backend)?)).collect()
        })
        .await
    }

    async fn commit(&self, function: &str, expect: Expect, changes: Vec<Change>) -> Result<()> {
        let function = function.to_owned();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let generation: Option<i64> = tx
                .query_row(
                    "SELECT generation FROM functions WHERE name = ?1",
                    params![function],
                    |row| row.get(0),
                )
                .optional()
                .map_err(backend)?;
            match (expect, generation) {
                (Expect::Absent, None) => {
                    let Some(Change::PutFunction(record)) = changes.first() else {
                        return Err(backend("a create must begin with PutFunction"));
                    };
                    tx.execute(
                        "INSERT INTO functions (name, generation, body) VALUES (?1, 0, ?2)",
                        params![function, encode(record)],
                    )
                    .map_err(backend)?;
                }
                (Expect::Absent, Some(_)) => return Err(StoreError::AlreadyExists),
                (Expect::Generation(want), Some(have)) if want == have as u64 => {}
                (Expect::Generation(_), _) => return Err(StoreError::Conflict),
            }
            tx.execute(
                "UPDATE functions SET generation = generation + 1 WHERE name = ?1",
                params![function],
            )
            .map_err(backend)?;
            for change in changes {
                apply(&tx, &function, change).map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn usage(&self) -> Result<Usage> {
        self.run(|conn| {
            let function_count: i64 = conn
                .query_row("SELECT COUNT(*) FROM functions", [], |row| row.get(0))
                .map_err(backend)?;
            let total_code_size: i64 = conn
                .query_row(
                    "SELECT COALESCE(SUM(code_size), 0) FROM versions",
                    [],
                    |row| row.get(0),
                )
                .map_err(backend)?;
            let mut reserved = 0u64;
            let mut stmt = conn
                .prepare_cached("SELECT body FROM functions")
                .map_err(backend)?;
            for body in stmt
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(backend)?
            {
                let function: Function = decode(body.map_err(backend)?)?;
                reserved += u64::from(function.reserved_concurrency.unwrap_or(0));
            }
            Ok(Usage {
                function_count: function_count as u64,
                total_code_size: total_code_size as u64,
                reserved_concurrency: reserved,
            })
        })
        .await
    }

    async fn code_in_use(&self) -> Result<BTreeSet<String>> {
        self.run(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT DISTINCT code_sha256 FROM versions")
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(backend)?;
            rows.map(|sha| sha.map_err(backend)).collect()
        })
        .await
    }
}
