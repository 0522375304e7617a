//! The layout of a `messages` row: one conversation's messages from one
//! batch. A header (the row's last seq and newest server time, so
//! retention can judge a row without reading its messages), then per
//! message its seq, server time, frame length and frame. Numbers are
//! big-endian; the length is a `u32`.

use bytes::Bytes;

use crate::store::{Record, StoreError};

const HEADER: usize = 16;
const ENTRY: usize = 20;

fn u64_at(v: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(at..at + 8)?.try_into().ok()?))
}

/// Writes `records` as a row into `out`; returns the last seq.
pub(crate) fn encode(records: &[&Record], out: &mut Vec<u8>) -> u64 {
    let last = records.iter().map(|r| r.seq).max().unwrap_or(0);
    let newest = records.iter().map(|r| r.ts_ms).max().unwrap_or(0);
    out.clear();
    out.extend_from_slice(&last.to_be_bytes());
    out.extend_from_slice(&newest.to_be_bytes());
    for r in records {
        out.extend_from_slice(&r.seq.to_be_bytes());
        out.extend_from_slice(&r.ts_ms.to_be_bytes());
        out.extend_from_slice(&(r.frame.len() as u32).to_be_bytes());
        out.extend_from_slice(&r.frame);
    }
    last
}

/// The row's last seq.
pub(crate) fn last(v: &[u8]) -> Option<u64> {
    u64_at(v, 0)
}

/// The server time of the row's newest message.
pub(crate) fn newest_ts(v: &[u8]) -> Option<u64> {
    u64_at(v, 8)
}

/// The row's messages as (seq, server time, frame); the frames share
/// the row's bytes.
pub(crate) fn entries(row: &Bytes) -> impl Iterator<Item = Result<(u64, u64, Bytes), StoreError>> {
    let mut at = HEADER;
    std::iter::from_fn(move || {
        if at >= row.len() {
            return None;
        }
        let entry = (|| {
            let seq = u64_at(row, at)?;
            let ts = u64_at(row, at + 8)?;
            let len = u32::from_be_bytes(row.get(at + 16..at + ENTRY)?.try_into().ok()?);
            let end = (at + ENTRY).checked_add(len as usize)?;
            (end <= row.len()).then(|| (seq, ts, row.slice(at + ENTRY..end), end))
        })();
        match entry {
            Some((seq, ts, frame, end)) => {
                at = end;
                Some(Ok((seq, ts, frame)))
            }
            None => {
                at = row.len();
                Some(Err(StoreError::Corrupt(
                    "a message row is cut short".into(),
                )))
            }
        }
    })
}
