//! What a read answers a client: GET's last-write-wins pick, VGET's context and live
//! siblings, EXISTS. Written straight from the quorum's merge by the coordinator, or
//! from a finished read by the client commands.

use crate::resp::{write_array_header, write_bulk, write_integer, write_null};
use crate::version::VersionSet;

/// Which read a client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadKind {
    Get,
    VGet,
    Exists,
}

/// A read's client reply: GET the last-write-wins value (null when deleted), VGET the
/// context and every live sibling, EXISTS 1 or 0.
pub(crate) fn write_read(out: &mut Vec<u8>, kind: ReadKind, merged: &VersionSet) {
    match kind {
        ReadKind::Get => match merged
            .last_write_wins()
            .and_then(|value| value.data.as_deref())
        {
            Some(data) => write_bulk(out, data),
            None => write_null(out),
        },
        ReadKind::VGet => {
            write_array_header(out, 2);
            write_bulk(out, merged.join().to_token().as_bytes());
            let live = merged
                .siblings()
                .filter(|s| !s.value.is_tombstone())
                .count();
            write_array_header(out, live);
            for sibling in merged.siblings() {
                if let Some(data) = &sibling.value.data {
                    write_bulk(out, data);
                }
            }
        }
        ReadKind::Exists => write_integer(out, i64::from(holds_value(merged))),
    }
}

/// EXISTS agrees with GET: a key exists when its last-write-wins pick is not a delete.
pub(crate) fn holds_value(merged: &VersionSet) -> bool {
    merged
        .last_write_wins()
        .is_some_and(|value| !value.is_tombstone())
}
