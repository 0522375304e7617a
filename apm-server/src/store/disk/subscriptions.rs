//! Server-side subscriptions in the `subscriptions` table: (user, channel)
//! → when it was made (ms since the Unix epoch). Added without a schema
//! change: an older build ignores the table.

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::db_error;
use crate::store::{StoreError, SubscriptionChange};

const SUBSCRIPTIONS: TableDefinition<(&str, &str), u64> = TableDefinition::new("subscriptions");

/// See [`crate::store::Store::set_subscription`].
pub(super) fn set(
    db: &Database,
    user: &str,
    channel: &str,
    on: bool,
    max: usize,
) -> Result<SubscriptionChange, StoreError> {
    let txn = db.begin_write().map_err(db_error)?;
    let change = {
        let mut table = txn.open_table(SUBSCRIPTIONS).map_err(db_error)?;
        let held = table.get((user, channel)).map_err(db_error)?.is_some();
        match (on, held) {
            (true, true) | (false, false) => SubscriptionChange::Unchanged,
            (false, true) => {
                table.remove((user, channel)).map_err(db_error)?;
                SubscriptionChange::Removed
            }
            (true, false) => {
                let count = table
                    .range((user, "")..)
                    .map_err(db_error)?
                    .take_while(|row| row.as_ref().is_ok_and(|(k, _)| k.value().0 == user))
                    .take(max)
                    .count();
                if count >= max {
                    SubscriptionChange::Full
                } else {
                    table
                        .insert((user, channel), crate::clock::now_ms())
                        .map_err(db_error)?;
                    SubscriptionChange::Added
                }
            }
        }
    };
    if change == SubscriptionChange::Added || change == SubscriptionChange::Removed {
        txn.commit().map_err(db_error)?;
    } else {
        txn.abort().map_err(db_error)?;
    }
    Ok(change)
}

/// See [`crate::store::Store::subscriptions`].
pub(super) fn of_user(db: &Database, user: &str) -> Result<Vec<String>, StoreError> {
    let txn = db.begin_read().map_err(db_error)?;
    let table = match txn.open_table(SUBSCRIPTIONS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(db_error(e)),
    };
    let mut channels = Vec::new();
    for row in table.range((user, "")..).map_err(db_error)? {
        let (key, _) = row.map_err(db_error)?;
        let (owner, channel) = key.value();
        if owner != user {
            break;
        }
        channels.push(channel.to_owned());
    }
    Ok(channels)
}

/// See [`crate::store::Store::has_subscriptions`].
pub(super) fn any(db: &Database) -> Result<bool, StoreError> {
    let txn = db.begin_read().map_err(db_error)?;
    match txn.open_table(SUBSCRIPTIONS) {
        Ok(t) => Ok(!t.is_empty().map_err(db_error)?),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
        Err(e) => Err(db_error(e)),
    }
}
