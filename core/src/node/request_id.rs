//! Request ids: the `u64` a peer request carries and its reply echoes, and whose it is.
//! One layout for every concern, kept here:
//!
//! | owner | bits |
//! |---|---|
//! | a coordinator's request (read, write, hint delivery) | its slab id: top three bits clear (slab generations stay below 2^29) |
//! | handoff | bit 62, the page serial (32 bits), the key's position (20 bits) |
//! | reaping | bit 61, the walk serial (32 bits), the page number (20 bits) |
//! | no reply wanted (read repair) | [`NO_REQUEST`], every bit set |

use crate::slab::SlotId;

/// On a message that wants no reply handled (read repair): no owner takes it.
pub(crate) const NO_REQUEST: u64 = u64::MAX;
const HANDOFF_BIT: u64 = 1 << 62;
const REAP_BIT: u64 = 1 << 61;
/// Bits of the position (handoff) or the page (reaping) under the serial.
pub(crate) const LOW_BITS: u32 = 20;

/// Whose a request id is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    Coordinator,
    Handoff,
    Reap,
    NoReply,
}

/// Whose `request` is.
pub(crate) fn owner(request: u64) -> Owner {
    match request {
        NO_REQUEST => Owner::NoReply,
        _ if request & HANDOFF_BIT != 0 => Owner::Handoff,
        _ if request & REAP_BIT != 0 => Owner::Reap,
        _ => Owner::Coordinator,
    }
}

/// A coordinator request's id: its slab id.
pub(crate) fn coordinator(id: SlotId) -> u64 {
    let request = id.to_u64();
    debug_assert_eq!(
        owner(request),
        Owner::Coordinator,
        "slab generation too high"
    );
    request
}

/// The id of handoff page `serial`'s key at `position`.
pub(crate) fn handoff(serial: u32, position: u32) -> u64 {
    HANDOFF_BIT | (u64::from(serial) << LOW_BITS) | u64::from(position)
}

/// The id of reaping walk `serial`'s page `page` (0: the query).
pub(crate) fn reap(serial: u32, page: u32) -> u64 {
    REAP_BIT | (u64::from(serial) << LOW_BITS) | u64::from(page)
}

/// What the ids of one handoff page or one reaping walk share.
pub(crate) fn batch(request: u64) -> u64 {
    request >> LOW_BITS
}

/// The position (handoff) or page (reaping) in `request`.
pub(crate) fn low(request: u64) -> u32 {
    (request & ((1 << LOW_BITS) - 1)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_owner_reads_back_and_batches_never_mix() {
        assert_eq!(owner(NO_REQUEST), Owner::NoReply);
        assert_eq!(owner(handoff(u32::MAX, 7)), Owner::Handoff);
        assert_eq!(owner(reap(u32::MAX, 7)), Owner::Reap);
        assert_eq!(
            owner(SlotId::from_u64((0x1fff_ffff << 32) | 9).to_u64()),
            Owner::Coordinator
        );
        assert_eq!(low(handoff(3, 7)), 7);
        assert_eq!(batch(handoff(3, 7)), batch(handoff(3, 0)));
        assert_ne!(batch(handoff(3, 7)), batch(reap(3, 7)));
    }
}
