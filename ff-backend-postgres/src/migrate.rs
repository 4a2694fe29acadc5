//! Embedded, ordered migrations.
//!
//! Each migration is a SQL file under `migrations/`, compiled into the binary. At connect, one
//! transaction takes a transaction-level advisory lock derived from the schema name (so two
//! processes starting at once on a fresh database do not race), creates the schema and the
//! version table if needed, refuses a schema whose recorded version is newer than this code,
//! applies the missing migrations in order, records each, and stores or checks the partition
//! count — all or nothing.

use ff_core::{EngineError, PartitionConfig};

use crate::db::Db;
use crate::pg_error::{from_pg, from_pool};

/// One migration.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "schema",
        sql: include_str!("../migrations/0001_schema.sql"),
    },
    Migration {
        version: 2,
        name: "functions",
        sql: include_str!("../migrations/0002_functions.sql"),
    },
    Migration {
        version: 3,
        name: "hot_path",
        sql: include_str!("../migrations/0003_hot_path.sql"),
    },
    Migration {
        version: 4,
        name: "direct_lease",
        sql: include_str!("../migrations/0004_direct_lease.sql"),
    },
];

/// The schema version this code writes and understands.
pub const SCHEMA_VERSION: i32 = 4;

/// A stable 64-bit key for the advisory lock of one schema (FNV-1a).
fn lock_key(schema: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"flowfabric.migrate:".iter().chain(schema.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// Brings `schema` up to [`SCHEMA_VERSION`] and checks the partition count.
pub(crate) async fn migrate(
    db: &Db,
    schema: &str,
    partitions: PartitionConfig,
) -> Result<(), EngineError> {
    let mut client = db.pool().get().await.map_err(from_pool)?;
    let tx = client.transaction().await.map_err(from_pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schema)])
        .await
        .map_err(from_pg)?;
    // `schema` is checked to be a plain identifier (config::check_schema_name).
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         SET LOCAL search_path TO {schema};
         CREATE TABLE IF NOT EXISTS ff_schema_version (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
         );"
    ))
    .await
    .map_err(from_pg)?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM ff_schema_version",
            &[],
        )
        .await
        .map_err(from_pg)?
        .get(0);
    if current > SCHEMA_VERSION {
        return Err(EngineError::Config(format!(
            "schema {schema} is at version {current}, newer than this code's version \
             {SCHEMA_VERSION}: upgrade ff-backend-postgres"
        )));
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        tracing::info!(
            schema,
            version = migration.version,
            name = migration.name,
            "applying migration"
        );
        tx.batch_execute(migration.sql).await.map_err(|e| {
            let err = from_pg(e);
            EngineError::Config(format!(
                "migration {} ({}) failed on schema {schema}: {err}",
                migration.version, migration.name
            ))
        })?;
        tx.execute(
            "INSERT INTO ff_schema_version (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await
        .map_err(from_pg)?;
    }
    let wanted = partitions.partitions.to_string();
    tx.execute(
        "INSERT INTO ff_meta (key, value) VALUES ('partitions', $1) ON CONFLICT (key) DO NOTHING",
        &[&wanted],
    )
    .await
    .map_err(from_pg)?;
    let stored: String = tx
        .query_one("SELECT value FROM ff_meta WHERE key = 'partitions'", &[])
        .await
        .map_err(from_pg)?
        .get(0);
    if stored != wanted {
        return Err(EngineError::Config(format!(
            "schema {schema} was created with {stored} partitions; this backend is configured \
             with {wanted}. The partition count is fixed for the life of a deployment"
        )));
    }
    tx.commit().await.map_err(from_pg)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn migrations_are_ordered_and_complete() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i32::try_from(i + 1).unwrap());
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
        assert_ne!(lock_key("a"), lock_key("b"));
    }

    /// The SQL without comments, whitespace collapsed.
    pub(crate) fn normalize(s: &str) -> String {
        s.lines()
            .map(|line| line.split("--").next().unwrap_or(""))
            .flat_map(str::split_whitespace)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The text of `sql` from the first `start` after `from` up to and including `end`.
    fn between<'a>(sql: &'a str, from: &str, start: &str, end: &str) -> &'a str {
        let at = sql.find(from).expect("the function is defined");
        let body = at + sql[at..].find(start).expect("the statement starts");
        let stop = body + sql[body..].find(end).expect("the statement ends") + end.len();
        &sql[body..stop]
    }

    /// The latest definition of `function` (the one in the last migration defining it), up to
    /// the end of its body.
    pub(crate) fn latest(function: &str) -> &'static str {
        let head = format!("FUNCTION {function}(");
        let sql = MIGRATIONS
            .iter()
            .rev()
            .map(|m| m.sql)
            .find(|sql| sql.contains(&head))
            .expect("the function is defined");
        let at = sql.find(&head).expect("the function is defined");
        let end = at + sql[at..].find("$$;").expect("the function ends");
        &sql[at..end]
    }

    /// `ff_complete` and `ff_fail` inline the claim statement of `ff_claim` (with the call's
    /// clock `v_now`; `ff_complete` claims what is left after its affinity claim); the copies
    /// in the latest definitions must stay identical, and so must the lease-taking UPDATE of
    /// the affinity claim.
    #[test]
    fn inlined_claims_match_ff_claim() {
        let claim = |start: &str, end: &str| {
            normalize(between(latest("ff_claim"), "ff_claim(", start, end))
                .replace("p_now", "v_now")
        };
        let pick = claim("SELECT c.id FROM ff_execution c", "SKIP LOCKED");
        let update = claim("UPDATE ff_execution x", "x.part;");
        let inlining = normalize(&format!("{} {}", latest("ff_complete"), latest("ff_fail")))
            .replace("LIMIT p_max - v_affine", "LIMIT p_max");
        assert_eq!(
            inlining.matches(&pick).count(),
            2,
            "inlined claim picks differ"
        );
        assert_eq!(
            inlining.matches(&update).count(),
            3,
            "inlined claim updates differ"
        );
    }

    /// `ff_complete` inlines the fast edge UPDATE of `ff_apply_edge`; the copies must stay
    /// identical but for the names of the values they read.
    #[test]
    fn inlined_edge_update_matches_ff_apply_edge() {
        let edge = normalize(between(
            latest("ff_apply_edge"),
            "ff_apply_edge(",
            "UPDATE ff_execution",
            "AS idle_lane",
        ));
        let inlined = normalize(between(
            latest("ff_complete"),
            "The general edge UPDATE",
            "UPDATE ff_execution",
            "AS idle_lane",
        ));
        let renamed = inlined
            .replace("v_now", "p_now")
            .replace("v_to", "p_to")
            .replace("v.flow_id", "p_flow");
        assert_eq!(
            renamed, edge,
            "inlined edge update differs from ff_apply_edge's"
        );
    }

    /// The direct lease of a chain's downstream writes the lease fields the claim writes, and
    /// returns the leased execution as the claim does.
    #[test]
    fn the_direct_lease_sets_what_a_claim_sets() {
        let claim = normalize(between(
            latest("ff_claim"),
            "ff_claim(",
            "SET state = 'running',",
            "fail_disposition = NULL",
        ))
        .replace("p_now", "v_now");
        let lease = normalize(between(
            latest("ff_complete"),
            "IF v_direct THEN",
            "state = 'running',",
            "fail_disposition = NULL",
        ));
        for field in claim.trim_start_matches("SET ").split(", ") {
            assert!(lease.contains(field), "the direct lease misses `{field}`");
        }
        let returning = |function: &str, from: &str| {
            normalize(between(latest(function), from, "RETURNING", "x.part"))
        };
        assert_eq!(
            returning("ff_complete", "IF v_direct THEN"),
            returning("ff_claim", "ff_claim("),
            "the direct lease returns another shape than the claim"
        );
    }
}
