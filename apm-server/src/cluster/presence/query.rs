//! Presence questions answered from the cluster's counts in Redis. Each
//! answers one page: names after a cursor, in name order, one more than
//! the page holds (so the caller knows whether another page follows).

use redis::aio::ConnectionManager;

/// The lowest name of a lexicographic range after `after`.
fn start(after: &Option<String>) -> String {
    match after {
        Some(a) => format!("({a}"),
        None => "-".to_owned(),
    }
}

/// `user`'s connections over the cluster.
pub(crate) async fn connections(
    conn: &mut ConnectionManager,
    user: &str,
) -> redis::RedisResult<u32> {
    let n: Option<i64> = redis::cmd("HGET")
        .arg("apm:p:conns")
        .arg(user)
        .query_async(conn)
        .await?;
    Ok(n.unwrap_or(0).clamp(0, u32::MAX as i64) as u32)
}

/// Names of the sorted set `key` after `after`, `limit + 1` at most.
async fn names(
    conn: &mut ConnectionManager,
    key: &str,
    after: &Option<String>,
    limit: u32,
) -> redis::RedisResult<Vec<String>> {
    redis::cmd("ZRANGEBYLEX")
        .arg(key)
        .arg(start(after))
        .arg("+")
        .arg("LIMIT")
        .arg(0)
        .arg(limit as u64 + 1)
        .query_async(conn)
        .await
}

/// Users online anywhere in the cluster.
pub(crate) async fn users(
    conn: &mut ConnectionManager,
    after: &Option<String>,
    limit: u32,
) -> redis::RedisResult<Vec<String>> {
    names(conn, "apm:p:users", after, limit).await
}

/// Users with a connection in `channel` anywhere in the cluster.
pub(crate) async fn members(
    conn: &mut ConnectionManager,
    channel: &str,
    after: &Option<String>,
    limit: u32,
) -> redis::RedisResult<Vec<String>> {
    names(conn, &format!("apm:p:m:{channel}"), after, limit).await
}

/// Channels with members anywhere in the cluster, with how many users
/// each has.
pub(crate) async fn channels(
    conn: &mut ConnectionManager,
    after: &Option<String>,
    limit: u32,
) -> redis::RedisResult<Vec<(String, u32)>> {
    let channels = names(conn, "apm:p:chans", after, limit).await?;
    if channels.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for channel in &channels {
        pipe.cmd("ZCARD").arg(format!("apm:p:m:{channel}"));
    }
    let counts: Vec<u32> = pipe.query_async(conn).await?;
    Ok(channels.into_iter().zip(counts).collect())
}

/// A node of the cluster as its presence lease shows it.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) node: String,
    /// When its lease ends (ms since the Unix epoch, Redis's clock).
    pub(crate) lease_until_ms: u64,
    /// Its open connections as of its last renewal.
    pub(crate) connections: u64,
}

/// Every node holding a presence lease (a lapsed one until it is taken
/// off).
pub(crate) async fn nodes(conn: &mut ConnectionManager) -> redis::RedisResult<Vec<Node>> {
    let leases: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg("apm:p:nodes")
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(conn)
        .await?;
    let load: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
        .arg("apm:p:load")
        .query_async(conn)
        .await?;
    Ok(leases
        .into_iter()
        .map(|(node, lease)| Node {
            connections: load.get(&node).copied().unwrap_or(0),
            lease_until_ms: lease as u64,
            node,
        })
        .collect())
}
