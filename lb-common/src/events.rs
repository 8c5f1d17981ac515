//! Indices of the per-CPU counter array `DRLB_EVENTS`: what happened to connections beside
//! a packet's verdict. A verdict says what became of each packet (`crate::verdict`); these
//! count what only some packets do, and what shows a SYN flood: SYNs whose half-open
//! entries are displaced before their handshakes complete, against handshakes that do.

/// An event; its discriminant is the index into `DRLB_EVENTS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A half-open connection left SYN_RECV and entered the connection table (normally
    /// the handshake's ACK).
    HalfOpenPromoted = 0,
    /// A SYN took the slot of another connection's live half-open entry, whose handshake
    /// had not completed: the table is turning over faster than handshakes complete, the
    /// sign of a SYN flood.
    HalfOpenDisplaced = 1,
}

/// Number of events; the size of `DRLB_EVENTS`.
pub const EVENT_COUNT: u32 = 2;

impl Event {
    /// All events, in index order.
    pub const ALL: [Event; EVENT_COUNT as usize] = [Event::HalfOpenPromoted, Event::HalfOpenDisplaced];

    /// Stable snake_case name used by `drlb` output and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Event::HalfOpenPromoted => "half_open_promoted",
            Event::HalfOpenDisplaced => "half_open_displaced",
        }
    }

    /// What the event means, for `drlb status --reasons` and metric help.
    pub const fn meaning(self) -> &'static str {
        match self {
            Event::HalfOpenPromoted => "handshakes completed: half-open connections moved into the connection table",
            Event::HalfOpenDisplaced => "half-open connections displaced by a later SYN before their handshake completed",
        }
    }

    #[inline(always)]
    pub const fn index(self) -> u32 {
        self as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order_and_complete() {
        for (i, e) in Event::ALL.iter().enumerate() {
            assert_eq!(e.index() as usize, i, "{}", e.name());
        }
    }
}
