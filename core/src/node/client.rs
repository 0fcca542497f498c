//! Client commands (design.md section 7): typed commands in, RESP replies out.

use super::actions::ClientId;
use super::coordinator::{check_quorum, coordination, reply_integer, reply_with};
use super::read_reply::ReadKind;
use super::replica::check_sizes;
use super::requests::{ReplyTo, WriteSpec};
use super::{Node, RequestError};
use crate::quorum::SyncWrites;
use crate::resp::{
    AdminCommand, Command, write_array_header, write_bulk, write_error, write_simple,
};
use crate::version::{Value, VersionVector};
use crate::wire::MemberStatus;
use core::fmt::Write as _;

/// A status as `RINGKV.MEMBERS` and INFO print it.
fn status_name(status: MemberStatus) -> &'static str {
    match status {
        MemberStatus::Joining => "joining",
        MemberStatus::Up => "up",
        MemberStatus::Leaving => "leaving",
        MemberStatus::Left => "left",
    }
}

impl Node {
    pub(crate) fn client_command(
        &mut self,
        client: ClientId,
        tag: u64,
        timestamp_ms: u64,
        command: Command<'_>,
    ) {
        let reply = ReplyTo::Client {
            client,
            tag,
            received_at: self.shared.now,
        };
        let refusal = if !command.is_data() {
            None
        } else if self.view.has_left() {
            Some(RequestError::Left)
        } else if !self.view.ready {
            Some(RequestError::NotJoined)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            let error = refusal.to_string();
            return reply_with(&mut self.shared, client, tag, false, |out| {
                write_error(out, &error)
            });
        }
        match command {
            Command::Get { key } => self.client_read(reply, ReadKind::Get, key, None),
            Command::VGet { key, read_quorum } => {
                self.client_read(reply, ReadKind::VGet, key, read_quorum)
            }
            Command::Set { key, value } => self.client_write(
                reply,
                false,
                key,
                None,
                Some(value),
                timestamp_ms,
                (None, None),
            ),
            Command::VSet {
                key,
                context,
                value,
                write_quorum,
                sync,
            } => self.client_write(
                reply,
                true,
                key,
                Some(context),
                Some(value),
                timestamp_ms,
                (write_quorum, sync),
            ),
            Command::VDel {
                key,
                context,
                write_quorum,
                sync,
            } => self.client_write(
                reply,
                true,
                key,
                Some(context),
                None,
                timestamp_ms,
                (write_quorum, sync),
            ),
            Command::Del { keys } => self.client_batch(client, tag, &keys, timestamp_ms, true),
            Command::Exists { keys } => self.client_batch(client, tag, &keys, timestamp_ms, false),
            Command::Ping { message } => {
                reply_with(&mut self.shared, client, tag, false, |out| match message {
                    Some(message) => write_bulk(out, message),
                    None => write_simple(out, "PONG"),
                })
            }
            Command::Echo { message } => reply_with(&mut self.shared, client, tag, false, |out| {
                write_bulk(out, message)
            }),
            Command::Quit => reply_with(&mut self.shared, client, tag, true, |out| {
                write_simple(out, "OK")
            }),
            Command::Command | Command::ConfigGet { .. } => {
                reply_with(&mut self.shared, client, tag, false, |out| {
                    write_array_header(out, 0)
                })
            }
            Command::ClientSetName { .. } => {
                reply_with(&mut self.shared, client, tag, false, |out| {
                    write_simple(out, "OK")
                })
            }
            Command::Info { section } => {
                let text = self.info(section);
                reply_with(&mut self.shared, client, tag, false, |out| {
                    write_bulk(out, text.as_bytes())
                })
            }
            Command::Admin(admin) => self.admin(client, tag, admin),
        }
    }

    fn client_read(&mut self, reply: ReplyTo, kind: ReadKind, key: &[u8], read_quorum: Option<u8>) {
        let checked = check_sizes(&self.shared, key, 0).and_then(|()| {
            check_quorum(
                &self.shared,
                read_quorum,
                self.shared.config.read_quorum_default,
            )
        });
        match checked {
            Ok(quorum) => {
                let (coordinator, mut cx) = coordination!(self);
                coordinator.start_read(&mut cx, reply, kind, key, quorum)
            }
            Err(error) => {
                let (coordinator, mut cx) = coordination!(self);
                coordinator.finish_read(&mut cx, reply, kind, Err(error))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn client_write(
        &mut self,
        reply: ReplyTo,
        reply_context: bool,
        key: &[u8],
        context: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: u64,
        options: (Option<u8>, Option<SyncWrites>),
    ) {
        let spec = self.write_spec(key, context, value, timestamp_ms, options);
        match spec {
            Ok(spec) => {
                let (coordinator, mut cx) = coordination!(self);
                coordinator.start_write(&mut cx, reply, reply_context, key, spec)
            }
            Err(error) => {
                let (coordinator, mut cx) = coordination!(self);
                coordinator.finish_write(&mut cx, reply, reply_context, Err(error))
            }
        }
    }

    fn write_spec(
        &self,
        key: &[u8],
        context: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: u64,
        (write_quorum, sync): (Option<u8>, Option<SyncWrites>),
    ) -> Result<WriteSpec, RequestError> {
        check_sizes(&self.shared, key, value.map_or(0, <[u8]>::len))?;
        let write_quorum = check_quorum(
            &self.shared,
            write_quorum,
            self.shared.config.write_quorum_default,
        )?;
        let context = match context {
            None => None,
            Some([]) => Some(VersionVector::new()),
            Some(token) => {
                let token = core::str::from_utf8(token).map_err(|_| {
                    RequestError::InvalidContext(crate::version::ContextError::NotBase64)
                })?;
                Some(VersionVector::from_token(token).map_err(RequestError::InvalidContext)?)
            }
        };
        let value = match value {
            Some(data) => Value::new(data.to_vec(), timestamp_ms),
            None => Value::tombstone(timestamp_ms),
        };
        Ok(WriteSpec {
            context,
            value,
            write_quorum,
            sync: sync.unwrap_or(self.shared.config.sync_writes_default),
            retry: None,
        })
    }

    /// DEL or EXISTS over several keys: one request per key under a parent that adds up
    /// the answers.
    fn client_batch(
        &mut self,
        client: ClientId,
        tag: u64,
        keys: &[&[u8]],
        timestamp_ms: u64,
        delete: bool,
    ) {
        if keys.len() > self.shared.config.keys_per_command_max as usize {
            return reply_integer(
                &mut self.shared,
                client,
                tag,
                Err(RequestError::Overloaded("too many keys in one command")),
            );
        }
        let (coordinator, mut cx) = coordination!(self);
        let parent = match coordinator.start_batch(&mut cx, client, tag, keys.len()) {
            Ok(parent) => parent,
            Err(error) => return reply_integer(&mut self.shared, client, tag, Err(error)),
        };
        let reply = ReplyTo::Batch { parent };
        for key in keys {
            if delete {
                self.client_write(reply, false, key, None, None, timestamp_ms, (None, None));
            } else {
                self.client_read(reply, ReadKind::Exists, key, None);
            }
        }
    }

    fn admin(&mut self, client: ClientId, tag: u64, admin: AdminCommand<'_>) {
        match admin {
            AdminCommand::Members => {
                let lines = self.member_lines();
                reply_with(&mut self.shared, client, tag, false, |out| {
                    write_array_header(out, lines.len());
                    for line in &lines {
                        write_bulk(out, line.as_bytes());
                    }
                });
            }
            AdminCommand::Ring => {
                let held = self.view.ring.replicas_held();
                let mut text = format!(
                    "partitions={} replicas={} balance={:.3} placement_digest={:016x}\r\n",
                    self.view.ring.partition_count(),
                    self.view.ring.replicas(),
                    self.view.ring.balance(),
                    self.view.membership.placement_digest(),
                );
                if !self.view.ready {
                    text.push_str("not joined: no member is up in this node's view\r\n");
                }
                for (member, held) in self.view.ring.members().iter().zip(held) {
                    let _ = write!(text, "{} holds {held} partition replicas\r\n", member.id.0);
                }
                reply_with(&mut self.shared, client, tag, false, |out| {
                    write_bulk(out, text.as_bytes())
                });
            }
            AdminCommand::Join { seed } => {
                let result = self.view.join(&mut self.shared, seed);
                self.reply_admin(client, tag, result);
            }
            AdminCommand::Leave => {
                let result = self.admin_leave();
                self.reply_admin(client, tag, result);
            }
            AdminCommand::Remove { id } => {
                let result = self.admin_remove(crate::version::NodeId(id));
                self.reply_admin(client, tag, result);
            }
            AdminCommand::Digest => {
                let lines = self.digest_lines();
                reply_with(&mut self.shared, client, tag, false, |out| {
                    write_array_header(out, lines.len());
                    for line in &lines {
                        write_bulk(out, line.as_bytes());
                    }
                });
            }
        }
    }

    /// `RINGKV.DIGEST`: one line per partition this node replicates, `partition=<p>
    /// root=<hex> keys=<n> reapable=<n>` (reapable: tombstones and records with
    /// superseded one-shot clock entries the reaping walk has yet to remove), or `partition=<p> building` while its tree is being rebuilt
    /// after a start. Replicas of a partition that report the same root while no write
    /// is in flight hold the same records (up to a hash collision; see `entropy`).
    fn digest_lines(&self) -> Vec<String> {
        (0..self.view.ring.partition_count())
            .filter(|&partition| self.replicates(partition))
            .map(|partition| {
                if self.entropy.trees.is_built(partition) {
                    format!(
                        "partition={partition} root={:016x} keys={} reapable={}",
                        self.entropy.trees.root(partition),
                        self.entropy.trees.keys_held(partition),
                        self.entropy.trees.reapable_held(partition)
                    )
                } else {
                    format!("partition={partition} building")
                }
            })
            .collect()
    }

    fn reply_admin(&mut self, client: ClientId, tag: u64, result: Result<(), &'static str>) {
        reply_with(&mut self.shared, client, tag, false, |out| match result {
            Ok(()) => write_simple(out, "OK"),
            Err(why) => write_error(out, &format!("ERR {why}")),
        });
    }

    /// `RINGKV.MEMBERS`: one line per member of the view.
    fn member_lines(&self) -> Vec<String> {
        self.view.membership
            .members()
            .iter()
            .map(|member| {
                let reachable = if self.healthy(member.id) { "yes" } else { "no" };
                let zone = member.zone.map_or_else(|| "-".to_string(), |zone| zone.to_string());
                format!(
                    "id={} status={} weight={} zone={zone} peer={} client={} version={} heartbeat={} reachable={reachable}",
                    member.id.0,
                    status_name(member.status),
                    member.weight,
                    String::from_utf8_lossy(&member.peer_address),
                    String::from_utf8_lossy(&member.client_address),
                    member.version,
                    member.heartbeat,
                )
            })
            .collect()
    }

    /// INFO's text for `section` (all sections when `None` or `all`): server, cluster
    /// (with one line per member), stats and background. A shell answers INFO itself
    /// with this text followed by what only it can measure (latency, storage).
    pub fn info(&self, section: Option<&[u8]>) -> String {
        let wants = |name: &str| {
            section.is_none_or(|s| {
                s.eq_ignore_ascii_case(name.as_bytes()) || s.eq_ignore_ascii_case(b"all")
            })
        };
        let mut text = String::new();
        if wants("server") {
            let _ = write!(
                text,
                "# Server\r\nringkv_node_id:{}\r\ncluster_id:{}\r\n\r\n",
                self.shared.id.0, self.shared.config.cluster_id
            );
        }
        if wants("cluster") {
            let members = self.view.membership.members();
            let up = members
                .iter()
                .filter(|m| m.status != MemberStatus::Left && self.healthy(m.id))
                .count();
            let _ = write!(
                text,
                "# Cluster\r\nstatus:{}\r\nmembers:{}\r\nmembers_reachable:{up}\r\nmembers_placed:{}\r\nplacement_digest:{:016x}\r\nreplicas:{}\r\nread_quorum:{}\r\nwrite_quorum:{}\r\nsync_writes:{}\r\nhints_held:{}\r\nhint_bytes_held:{}\r\nanti_entropy_exchanges_owed:{}\r\n",
                status_name(self.view.membership.local().status),
                members.len(),
                self.view.ring.members().len(),
                self.view.membership.placement_digest(),
                self.shared.config.replicas,
                self.shared.config.read_quorum_default,
                self.shared.config.write_quorum_default,
                self.shared.config.sync_writes_default.name(),
                self.hints.len(),
                self.hints.bytes(),
                self.owed.len(),
            );
            for member in members {
                let _ = write!(
                    text,
                    "member_{}:status={},reachable={},peer={},client={}\r\n",
                    member.id.0,
                    status_name(member.status),
                    u8::from(member.id == self.shared.id || self.healthy(member.id)),
                    String::from_utf8_lossy(&member.peer_address),
                    String::from_utf8_lossy(&member.client_address),
                );
            }
            text.push_str("\r\n");
        }
        if wants("stats") {
            let stats = self.stats();
            let _ = write!(
                text,
                "# Stats\r\nrequests_in_flight:{}\r\nreads_coordinated:{}\r\nreads_speculated:{}\r\nwrites_coordinated:{}\r\nwrites_forwarded:{}\r\nforwards_redirected:{}\r\nforwards_retried:{}\r\nwrites_handed_on:{}\r\nstand_in_writes:{}\r\nread_repairs_sent:{}\r\nhints_stored:{}\r\nhints_held_for_down_owners:{}\r\nhints_delivered:{}\r\nhints_dropped:{}\r\nhints_refused:{}\r\noverloaded:{}\r\nmerges_coalesced:{}\r\nrequests_timed_out:{}\r\npeers_marked_down:{}\r\ncorrupt_records_replaced:{}\r\n\r\n",
                self.coordinator.requests.len(),
                stats.reads_coordinated,
                stats.reads_speculated,
                stats.writes_coordinated,
                stats.writes_forwarded,
                stats.forwards_redirected,
                stats.forwards_retried,
                stats.writes_handed_on,
                stats.stand_in_writes,
                stats.read_repairs_sent,
                stats.hints_stored,
                stats.hints_held_for_down_owners,
                stats.hints_delivered,
                stats.hints_dropped,
                stats.hints_refused,
                stats.overloaded,
                stats.merges_coalesced,
                stats.requests_timed_out,
                stats.peers_marked_down,
                stats.corrupt_records_replaced,
            );
            let handing_off = self
                .handoffs
                .partition()
                .map_or_else(|| "none".to_string(), |p| p.to_string());
            let _ = write!(
                text,
                "# Background\r\nentropy_exchanges:{}\r\nentropy_in_sync:{}\r\nentropy_keys_pushed:{}\r\nhandoff_partition:{handing_off}\r\nhandoff_pages:{}\r\nhandoff_keys_sent:{}\r\nhandoff_bytes_sent:{}\r\nhandoff_keys_deleted:{}\r\nwriter_epochs_started:{}\r\nreap_walks:{}\r\nreap_walks_blocked:{}\r\nreap_keys:{}\r\nreap_candidates:{}\r\nrecords_reapable:{}\r\n\r\n",
                stats.entropy_exchanges,
                stats.entropy_in_sync,
                stats.entropy_keys_pushed,
                stats.handoff_pages,
                stats.handoff_keys_sent,
                stats.handoff_bytes_sent,
                stats.handoff_keys_deleted,
                stats.writer_epochs_started,
                stats.reap_walks,
                stats.reap_walks_blocked,
                stats.reap_keys,
                stats.reap_candidates,
                stats.records_reapable,
            );
        }
        text
    }
}
