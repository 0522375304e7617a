//! The disk store against a real redb file in a temporary directory.

use super::*;
use std::sync::Arc;

fn record(channel: &str, seq: u64, ts_ms: u64) -> Record {
    Record {
        conversation: ConversationId::Channel(Arc::from(channel)),
        seq,
        ts_ms,
        frame: Bytes::from(format!("frame {channel} {seq}")),
    }
}

const KEEP3: Retention = Retention {
    max_messages: 3,
    max_age_ms: 0,
    max_bytes: 0,
};

fn keep(r: Retention) -> RetentionPolicy {
    RetentionPolicy::uniform(r)
}

#[test]
fn survives_reopening_with_heads_and_acks() {
    let dir = tempfile::tempdir().unwrap();
    let epoch;
    {
        let store = DiskStore::open(dir.path()).unwrap();
        epoch = store.epoch();
        let mut batch = Batch::default();
        for seq in 1..=5 {
            batch.messages.push(record("a", seq, 100 + seq));
        }
        batch.messages.push(record("b", 1, 100));
        batch.acks.push(AckRecord {
            user: Arc::from("alice"),
            conversation: ConversationId::Channel(Arc::from("a")),
            seq: 4,
        });
        store.write(&batch, &keep(KEEP3)).unwrap();
    }
    let store = DiskStore::open(dir.path()).unwrap();
    assert_eq!(store.epoch(), epoch);
    let rec = store.recover(&keep(KEEP3)).unwrap();
    let a = rec
        .conversations
        .iter()
        .find(|c| c.conversation == ConversationId::Channel(Arc::from("a")))
        .unwrap();
    assert_eq!(a.last, 5);
    let seqs: Vec<u64> = a.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![3, 4, 5]);
    assert_eq!(&a.messages[2].frame[..], b"frame a 5");
    assert_eq!(a.messages[2].ts_ms, 105);
    assert_eq!(rec.acks.len(), 1);
    assert_eq!(rec.acks[0].seq, 4);
}

fn rows(store: &DiskStore) -> usize {
    store
        .with_db(|db| {
            let txn = db.begin_read().map_err(db_error)?;
            let t = txn.open_table(MESSAGES).map_err(db_error)?;
            Ok(t.iter().map_err(db_error)?.count())
        })
        .unwrap()
}

#[test]
fn expiry_keeps_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    // One batch each: one row each.
    for seq in 1..=3 {
        let batch = Batch {
            messages: vec![record("a", seq, seq * 10)],
            acks: Vec::new(),
        };
        store.write(&batch, &keep(KEEP3)).unwrap();
    }
    // An age limit of 10 ms, at 35 ms: messages before 25 go.
    let aged = keep(Retention {
        max_messages: 3,
        max_age_ms: 10,
        max_bytes: 0,
    });
    store.expire(35, &aged).unwrap();
    let rec = store.recover(&keep(KEEP3)).unwrap();
    assert_eq!(rec.conversations[0].last, 3);
    assert_eq!(rec.conversations[0].messages.len(), 1);
    store.expire(u64::MAX, &aged).unwrap();
    let rec = store.recover(&keep(KEEP3)).unwrap();
    assert_eq!(rec.conversations[0].last, 3);
    assert!(rec.conversations[0].messages.is_empty());
}

#[test]
fn rows_go_when_all_their_messages_are_past_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let mut seq = 0;
    for size in [2, 2, 2] {
        let mut batch = Batch::default();
        for _ in 0..size {
            seq += 1;
            batch.messages.push(record("a", seq, seq));
        }
        store.write(&batch, &keep(KEEP3)).unwrap();
    }
    // Seqs 4..=6 are kept: the row 1-2 went, the row 3-4 stays for 4.
    assert_eq!(rows(&store), 2);
    let rec = store.recover(&keep(KEEP3)).unwrap();
    let seqs: Vec<u64> = rec.conversations[0]
        .messages
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seqs, vec![4, 5, 6]);
}

#[test]
fn reads_skip_old_messages_of_a_kept_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let now = crate::clock::now_ms();
    let batch = Batch {
        messages: (1..=5)
            .map(|s| record("a", s, now - (5 - s) * 1000))
            .collect(),
        acks: Vec::new(),
    };
    let limit = Retention {
        max_messages: 100,
        max_age_ms: 2500,
        max_bytes: 0,
    };
    store.write(&batch, &keep(limit)).unwrap();
    store.expire(now, &keep(limit)).unwrap();
    assert_eq!(rows(&store), 1, "the row has recent messages");
    let rec = store.recover(&keep(limit)).unwrap();
    let seqs: Vec<u64> = rec.conversations[0]
        .messages
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seqs, vec![3, 4, 5]);
}

#[test]
fn a_cut_row_is_reported_corrupt() {
    let r = record("a", 1, 1);
    let mut v = Vec::new();
    row::encode(&[&r], &mut v);
    let whole = Bytes::from(v.clone());
    let got: Vec<_> = row::entries(&whole).collect::<Result<_, _>>().unwrap();
    assert_eq!(got, vec![(1, 1, r.frame.clone())]);
    let cut = Bytes::from(v[..v.len() - 1].to_vec());
    let got: Vec<_> = row::entries(&cut).collect();
    assert!(matches!(got.as_slice(), [Err(StoreError::Corrupt(_))]));
}

#[test]
fn ranges_read_across_rows_within_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let policy = keep(Retention {
        max_messages: 6,
        max_age_ms: 0,
        max_bytes: 0,
    });
    // Rows of 1, 3 and 4 messages: seqs 1, 2-4, 5-8.
    for rows in [1..=1u64, 2..=4, 5..=8] {
        let batch = Batch {
            messages: rows.map(|seq| record("a", seq, seq)).collect(),
            acks: Vec::new(),
        };
        store.write(&batch, &policy).unwrap();
    }
    let a = ConversationId::Channel(Arc::from("a"));
    let seqs = |from, to| -> Vec<u64> {
        let got = store.read_range(&a, from, to, &policy).unwrap();
        assert!(
            got.iter()
                .all(|r| r.frame == record("a", r.seq, r.seq).frame)
        );
        got.iter().map(|r| r.seq).collect()
    };
    assert_eq!(seqs(4, 6), vec![4, 5, 6]);
    assert_eq!(
        seqs(0, u64::MAX),
        vec![3, 4, 5, 6, 7, 8],
        "retention: the last 6"
    );
    assert_eq!(seqs(8, 100), vec![8]);
    assert!(seqs(9, 100).is_empty());
    assert!(seqs(6, 5).is_empty());
    let other = ConversationId::Channel(Arc::from("b"));
    assert!(store.read_range(&other, 0, 10, &policy).unwrap().is_empty());
}

#[test]
fn a_file_of_another_schema_is_refused_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    drop(DiskStore::open(dir.path()).unwrap());
    // Reopening the same layout works, and records it.
    drop(DiskStore::open(dir.path()).unwrap());
    {
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("schema", 99).unwrap();
        txn.commit().unwrap();
    }
    match DiskStore::open(dir.path()) {
        Err(StoreError::Schema {
            found, supported, ..
        }) => assert_eq!((found, supported), (99, SCHEMA)),
        other => panic!("expected a schema error, got {other:?}"),
    }
    let text = DiskStore::open(dir.path()).unwrap_err().to_string();
    assert!(
        text.contains("schema 99") && text.contains("apm.redb"),
        "{text}"
    );
}

#[test]
fn a_data_directory_in_use_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = DiskStore::open(dir.path()).unwrap();
    let text = DiskStore::open(dir.path()).unwrap_err().to_string();
    let file = dir.path().join(FILE_NAME);
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(text.contains("another process"), "{text}");
}

#[test]
fn server_side_subscriptions_are_kept_per_user_bounded_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = DiskStore::open(dir.path()).unwrap();
        assert!(!store.has_subscriptions().unwrap());
        let set = |user, channel, on| store.set_subscription(user, channel, on, 2).unwrap();
        assert_eq!(set("ann", "b", true), SubscriptionChange::Added);
        assert_eq!(set("ann", "a", true), SubscriptionChange::Added);
        assert_eq!(set("ann", "a", true), SubscriptionChange::Unchanged);
        assert_eq!(set("ann", "c", true), SubscriptionChange::Full);
        // Another user's, and one whose name starts like ann's.
        assert_eq!(set("annie", "z", true), SubscriptionChange::Added);
        assert_eq!(set("bob", "x", false), SubscriptionChange::Unchanged);
    }
    let store = DiskStore::open(dir.path()).unwrap();
    assert!(store.has_subscriptions().unwrap());
    assert_eq!(store.subscriptions("ann").unwrap(), ["a", "b"]);
    assert_eq!(store.subscriptions("annie").unwrap(), ["z"]);
    assert!(store.subscriptions("an").unwrap().is_empty());
    assert_eq!(
        store.set_subscription("ann", "a", false, 2).unwrap(),
        SubscriptionChange::Removed
    );
    assert_eq!(store.subscriptions("ann").unwrap(), ["b"]);
}
