//! What INFO reports that only a shell can measure: latency per command (from the
//! request's arrival to its reply, HdrHistogram in microseconds), operations per
//! second, connected clients.

use hdrhistogram::Histogram;
use ringkv_core::resp::Command;
use std::fmt::Write as _;

/// The commands INFO reports latency for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind {
    Get,
    Set,
    Del,
    Exists,
    VGet,
    VSet,
    VDel,
    Other,
}

impl CommandKind {
    const ALL: [CommandKind; 8] = [
        CommandKind::Get,
        CommandKind::Set,
        CommandKind::Del,
        CommandKind::Exists,
        CommandKind::VGet,
        CommandKind::VSet,
        CommandKind::VDel,
        CommandKind::Other,
    ];

    pub fn of(command: &Command<'_>) -> CommandKind {
        match command {
            Command::Get { .. } => CommandKind::Get,
            Command::Set { .. } => CommandKind::Set,
            Command::Del { .. } => CommandKind::Del,
            Command::Exists { .. } => CommandKind::Exists,
            Command::VGet { .. } => CommandKind::VGet,
            Command::VSet { .. } => CommandKind::VSet,
            Command::VDel { .. } => CommandKind::VDel,
            _ => CommandKind::Other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            CommandKind::Get => "get",
            CommandKind::Set => "set",
            CommandKind::Del => "del",
            CommandKind::Exists => "exists",
            CommandKind::VGet => "vget",
            CommandKind::VSet => "vset",
            CommandKind::VDel => "vdel",
            CommandKind::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Longest latency a histogram records (longer ones are clamped to it): one minute.
const LATENCY_MAX_US: u64 = 60_000_000;

/// Counters and histograms since the node started.
#[derive(Debug)]
pub struct Metrics {
    latency_us: Vec<Option<Histogram<u64>>>,
    pub operations: u64,
    operations_at_tick: u64,
    pub operations_per_second: u64,
    pub clients_connected: u64,
    pub clients_refused: u64,
    pub protocol_errors: u64,
    pub peer_frames_dropped: u64,
    pub peers_refused: u64,
    /// Frames queued to peers, and the write calls that carried them: under load many
    /// frames share one call.
    pub peer_frames_sent: u64,
    pub peer_write_calls: u64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            latency_us: CommandKind::ALL
                .iter()
                .map(|_| Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).ok())
                .collect(),
            operations: 0,
            operations_at_tick: 0,
            operations_per_second: 0,
            clients_connected: 0,
            clients_refused: 0,
            protocol_errors: 0,
            peer_frames_dropped: 0,
            peers_refused: 0,
            peer_frames_sent: 0,
            peer_write_calls: 0,
        }
    }
}

impl Metrics {
    /// A reply went out `latency_us` after its request arrived.
    pub fn record(&mut self, kind: CommandKind, latency_us: u64) {
        self.operations += 1;
        if let Some(Some(histogram)) = self.latency_us.get_mut(kind.index()) {
            histogram.saturating_record(latency_us.clamp(1, LATENCY_MAX_US));
        }
    }

    /// Called once a second: operations per second over the last second.
    pub fn tick_second(&mut self) {
        self.operations_per_second = self.operations - self.operations_at_tick;
        self.operations_at_tick = self.operations;
    }

    /// INFO's `# Clients` and `# Latency` sections.
    pub fn write_info(&self, text: &mut String, wants: impl Fn(&str) -> bool) {
        if wants("clients") {
            let _ = write!(
                text,
                "# Clients\r\nconnected_clients:{}\r\nrejected_connections:{}\r\nprotocol_errors:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:{}\r\npeer_frames_sent:{}\r\npeer_write_calls:{}\r\npeer_frames_dropped:{}\r\npeers_refused:{}\r\n\r\n",
                self.clients_connected,
                self.clients_refused,
                self.protocol_errors,
                self.operations,
                self.operations_per_second,
                self.peer_frames_sent,
                self.peer_write_calls,
                self.peer_frames_dropped,
                self.peers_refused,
            );
        }
        if wants("latency") {
            text.push_str("# Latency\r\n");
            for kind in CommandKind::ALL {
                let Some(Some(histogram)) = self.latency_us.get(kind.index()) else {
                    continue;
                };
                if histogram.is_empty() {
                    continue;
                }
                let _ = write!(
                    text,
                    "latency_{}_us:count={},p50={},p99={},p99.9={},max={}\r\n",
                    kind.name(),
                    histogram.len(),
                    histogram.value_at_quantile(0.5),
                    histogram.value_at_quantile(0.99),
                    histogram.value_at_quantile(0.999),
                    histogram.max(),
                );
            }
            text.push_str("\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lines_appear_per_command_with_percentiles() {
        let mut metrics = Metrics::default();
        for latency_us in 1..=1000 {
            metrics.record(CommandKind::Get, latency_us);
        }
        metrics.tick_second();
        let mut text = String::new();
        metrics.write_info(&mut text, |_| true);
        assert!(text.contains("latency_get_us:count=1000,p50=500"), "{text}");
        assert!(!text.contains("latency_set_us"), "no SET was timed");
        assert!(text.contains("instantaneous_ops_per_sec:1000"), "{text}");
    }
}
