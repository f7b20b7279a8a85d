//! Reading the ledger, `pgchain.offsets`: how far each (consumer group,
//! topic, partition) has been applied. Only the runtime's procedures write it,
//! in the chain's own transaction.

use std::collections::HashMap;

/// The applied position of each of `parts` that the ledger knows.
pub async fn applied(
    client: &tokio_postgres::Client,
    group: &str,
    parts: &[(String, i32)],
) -> Result<HashMap<(String, i32), i64>, tokio_postgres::Error> {
    let topics: Vec<&str> = parts.iter().map(|(t, _)| t.as_str()).collect();
    let partitions: Vec<i32> = parts.iter().map(|(_, p)| *p).collect();
    let rows = client
        .query(
            "select o.topic, o.partition, o.applied_through from pgchain.offsets o
              join unnest($2::text[], $3::int[]) as a(topic, partition)
                on a.topic = o.topic and a.partition = o.partition
             where o.group_id = $1",
            &[&group, &topics, &partitions],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect())
}

/// Every position of the group: (topic, partition) → (applied offset, when
/// it was last moved, as UTC ISO 8601).
pub async fn positions(
    client: &tokio_postgres::Client,
    group: &str,
) -> Result<HashMap<(String, i32), (i64, String)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "select topic, partition, applied_through,
                    to_char(updated_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
               from pgchain.offsets where group_id = $1",
            &[&group],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
        .collect())
}

/// Records that offsets `from..=to` of a partition were deleted before they
/// were applied, and moves the ledger past them (`pgchain.skip_gap`).
pub async fn skip_gap(
    client: &tokio_postgres::Client,
    group: &str,
    topic: &str,
    partition: i32,
    (from, to): (i64, i64),
    reason: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "call pgchain.skip_gap($1, $2, $3, $4, $5, $6)",
            &[&group, &topic, &partition, &from, &to, &reason],
        )
        .await
        .map(|_| ())
}

/// Moves the ledger to `offset` for an offset that ran nothing (a skipped
/// tombstone ending a batch); never back (`pgchain.advance`).
pub async fn advance(
    client: &tokio_postgres::Client,
    group: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "call pgchain.advance($1, $2, $3, $4)",
            &[&group, &topic, &partition, &offset],
        )
        .await
        .map(|_| ())
}
