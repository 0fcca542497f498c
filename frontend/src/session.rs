//! One client connection's protocol state, sans-io: bytes and `now` in, requests to
//! run and replies out. Both binaries' frontends and the simulator's nodes drive it,
//! so what a client can observe is decided in one place.
//!
//! The contract it keeps (the README's command table says the same to users):
//! - **Replies in request order.** The core may answer a pipeline out of order; the
//!   [`Pipeline`] holds early replies until every earlier one went out.
//! - **A command observes every earlier command of its connection**, as in Redis,
//!   while independent keys still run concurrently. A request that touches a key an
//!   earlier request of this connection is still writing (or, for a write, still
//!   reading) waits, and so does everything behind it: parsing stops there and resumes
//!   when that request finishes. Reads of the same key run together. Commands without
//!   keys that read or change cluster state (`RINGKV.*`) wait for every earlier
//!   request and hold back later ones; PING, ECHO, INFO, CONFIG, CLIENT, COMMAND and
//!   QUIT never wait (their replies are ordered anyway).
//! - **No transactions.** ringkv has Dynamo's single-key operations, so a transaction
//!   fails whole and nothing queued in it is applied. It fails the way Redis fails a
//!   transaction whose commands cannot be queued, the path every client library
//!   handles: `MULTI` answers `+OK`, every command up to `EXEC` or `DISCARD` gets an
//!   error naming the reason (ringkv has no transactions), and `EXEC` answers
//!   `-EXECABORT` (`DISCARD` answers `+OK`). An error to MULTI itself was tried first:
//!   the `redis` crate panics on it (an index underflow in its transaction reader). `WATCH` and `UNWATCH` are refused;
//!   `EXEC` and `DISCARD` alone get Redis's "without MULTI" errors.
//! - **Oversize requests** (a bulk string over the size bound, up to Redis's protocol
//!   maximum of 512 MiB) get `-ERR value too large` and their bytes are dropped as
//!   they arrive, never buffered; the connection stays usable. Malformed framing, or a
//!   length past the protocol maximum, gets `-ERR Protocol error: ...` and the
//!   connection closes once that is written.
//! - **AUTH and HELLO** as Redis answers them (`--requirepass`); until a client gave
//!   the password, everything but AUTH, HELLO ... AUTH and QUIT gets `-NOAUTH`.
//! - After QUIT or a protocol error nothing more of the connection is parsed.
//!
//! Bounds: at most [`crate::connection::PIPELINE_MAX`] requests wait for replies (then
//! [`Session::is_paused`] asks the loop to stop reading); the keys tracked for
//! ordering are those of requests in flight, so they share that bound.

use crate::connection::Pipeline;

use crate::metrics::CommandKind;
use ringkv_core::Instant;
use ringkv_core::placement::key_hash;
use ringkv_core::resp::{self, Command, Parsed, RespLimits, Skip};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// What a session needs to know of its node.
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits<'a> {
    pub resp: RespLimits,
    /// The most a connection's read buffer holds: a request that cannot complete
    /// within it is a protocol error.
    pub read_buffer_bytes_max: usize,
    /// For the error an oversize value gets.
    pub value_size_bytes_max: usize,
    /// `--requirepass`.
    pub password: Option<&'a str>,
}

/// What to do after [`Session::next`].
#[derive(Debug)]
pub enum Step<'a> {
    /// Nothing more until more bytes arrive or an earlier request finishes.
    Wait,
    /// The session answered a request itself: the reply is in the buffer given to
    /// `next`; deliver it under `tag` with [`Session::finish`].
    Replied { tag: u64 },
    /// A protocol error is in the buffer: deliver it under `tag`, then close.
    Refused { tag: u64 },
    /// Run `command` (the core, or the shell for INFO) and finish `tag` with its reply.
    Run { tag: u64, command: Command<'a> },
}

/// A request waiting for its reply: for latency, and for the ordering of later ones.
#[derive(Clone, Debug)]
pub struct Pending {
    pub kind: CommandKind,
    pub started: Instant,
    access: Access,
}

/// How a request orders against the connection's other requests. Small (16 bytes):
/// one per request waiting in the pipeline; only multi-key commands allocate.
#[derive(Clone, Debug)]
enum Access {
    /// Never waits, never holds anything back.
    Free,
    /// Waits for every earlier request; later ones wait for it.
    Barrier,
    /// Reads (`write` false) or writes one key (its hash).
    One { key: u64, write: bool },
    /// Reads or writes several keys (DEL, EXISTS).
    Many { keys: Box<[u64]>, write: bool },
}

impl Access {
    /// The keys (hashes) and whether they are written; `None` for free and barrier
    /// requests.
    fn keys(&self) -> Option<(&[u64], bool)> {
        match self {
            Access::One { key, write } => Some((core::slice::from_ref(key), *write)),
            Access::Many { keys, write } => Some((keys, *write)),
            Access::Free | Access::Barrier => None,
        }
    }
}

/// Requests in flight per key hash: (reads, writes). The keys are xxh3 hashes
/// already, so the map uses them as they are instead of hashing them again.
type KeyUses = HashMap<u64, (u32, u32), BuildHasherDefault<KeyHashPassThrough>>;

/// A `Hasher` for keys that are hashes already: it keeps the last `u64` written.
#[derive(Debug, Default)]
struct KeyHashPassThrough(u64);

impl Hasher for KeyHashPassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the keys are `u64`); fold anything else.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// A reply filed with [`Session::finish`].
#[derive(Clone, Copy, Debug)]
pub struct Finished {
    pub kind: CommandKind,
    pub started: Instant,
    /// A reply that closes the connection went out (nothing after it does).
    pub closing: bool,
    /// Parsing had stopped for a request that may go now: parse again.
    pub resume: bool,
}

/// One client connection's protocol state.
#[derive(Debug)]
pub struct Session {
    pipeline: Pipeline<Pending>,
    keys: KeyUses,
    /// Barrier requests in flight.
    barriers: u32,
    /// Read, write and barrier requests in flight.
    ordered: u32,
    /// Parsing stopped at a request that waits for an earlier one.
    blocked: bool,
    /// Sabotage: requests never wait for earlier ones of their connection.
    unordered: bool,
    /// The rest of an oversize request being dropped.
    skip: Option<Skip>,
    /// In a transaction (after MULTI): commands up to EXEC or DISCARD are refused.
    refusing_transaction: bool,
    /// QUIT or a protocol error: nothing more is parsed.
    ended: bool,
    resp3: bool,
    authenticated: bool,
    id: u64,
}

const REFUSED_IN_TRANSACTION: &str = "ERR not applied: ringkv has no transactions (Dynamo's single-key operations), so nothing after MULTI is queued or run; EXEC will abort, DISCARD ends it";
const EXEC_ABORTED: &str =
    "EXECABORT Transaction discarded: ringkv has no transactions, nothing was applied";
const WATCH_REFUSED: &str =
    "ERR WATCH is not supported: ringkv has no transactions (Dynamo's single-key operations)";

impl Session {
    /// A new connection with id `id` (HELLO reports it); `authenticated` when no
    /// password is needed.
    pub fn new(id: u64, authenticated: bool) -> Session {
        Session {
            pipeline: Pipeline::default(),
            keys: KeyUses::default(),
            barriers: 0,
            ordered: 0,
            blocked: false,
            unordered: false,
            skip: None,
            refusing_transaction: false,
            ended: false,
            resp3: false,
            authenticated,
            id,
        }
    }

    /// Sabotage for the simulator's checkers: every request runs as soon as it is
    /// parsed, as if no earlier request of the connection could be in flight (a
    /// pipelined read then races the write before it).
    #[cfg(feature = "sabotage")]
    pub fn sabotage_unordered(&mut self) {
        self.unordered = true;
    }

    /// The connection's id, as HELLO reports it.
    pub fn set_id(&mut self, id: u64) {
        self.id = id;
    }

    /// The client switched to RESP3 with `HELLO 3`.
    pub fn resp3(&self) -> bool {
        self.resp3
    }

    /// No request waits for its reply.
    pub fn is_idle(&self) -> bool {
        self.pipeline.is_empty()
    }

    /// Reading should stop: the pipeline is full, or parsing waits for an earlier
    /// request (bytes would only pile up).
    pub fn is_paused(&self) -> bool {
        self.blocked || self.pipeline.is_full()
    }

    /// Takes the next step from `input` (the connection's unparsed bytes): returns how
    /// many bytes it used and what to do. Replies the session makes itself are written
    /// into `reply` (cleared first). Call again until [`Step::Wait`].
    pub fn next<'a>(
        &mut self,
        input: &'a [u8],
        now: Instant,
        limits: SessionLimits<'_>,
        reply: &mut Vec<u8>,
    ) -> (usize, Step<'a>) {
        reply.clear();
        let mut used = 0;
        loop {
            if self.ended || self.pipeline.is_full() {
                return (used, Step::Wait);
            }
            if let Some(mut skip) = self.skip.take() {
                match skip.advance(&input[used..], limits.resp) {
                    Ok(dropped) => used += dropped,
                    Err(reason) => return (input.len(), self.refuse(now, reason, reply)),
                }
                if !skip.is_done() {
                    self.skip = Some(skip);
                    return (used, Step::Wait);
                }
            }
            let rest = &input[used..];
            match resp::parse_request(rest, limits.resp) {
                Parsed::Incomplete if rest.len() >= limits.read_buffer_bytes_max => {
                    return (input.len(), self.refuse(now, "request too large", reply));
                }
                Parsed::Incomplete => return (used, Step::Wait),
                Parsed::Invalid(reason) => return (input.len(), self.refuse(now, reason, reply)),
                Parsed::TooLarge {
                    consumed,
                    size_bytes,
                    skip,
                } => {
                    self.skip = Some(skip);
                    let text = format!(
                        "ERR value too large: {size_bytes} bytes, the limit is {}",
                        limits.value_size_bytes_max
                    );
                    resp::write_error(reply, &text);
                    return (used + consumed, self.answered(now));
                }
                Parsed::Request {
                    consumed,
                    arguments,
                } => {
                    if arguments.is_empty() {
                        used += consumed;
                        continue;
                    }
                    let step = self.request(&arguments, now, limits, reply);
                    if matches!(step, Step::Wait) {
                        return (used, step);
                    }
                    return (used + consumed, step);
                }
            }
        }
    }

    /// One whole request: answered here, refused, run, or held back (`Wait`, nothing
    /// consumed).
    fn request<'a>(
        &mut self,
        arguments: &[&'a [u8]],
        now: Instant,
        limits: SessionLimits<'_>,
        reply: &mut Vec<u8>,
    ) -> Step<'a> {
        let name = arguments[0];
        let is = |word: &[u8]| name.eq_ignore_ascii_case(word);
        if is(b"AUTH") {
            match auth(arguments, limits.password) {
                Ok(()) => {
                    self.authenticated = true;
                    resp::write_simple(reply, "OK");
                }
                Err(error) => resp::write_error(reply, error),
            }
            return self.answered(now);
        }
        if is(b"HELLO") {
            let mut authenticated = self.authenticated;
            let (resp3, bytes) = hello(
                arguments,
                self.resp3,
                self.id,
                limits.password,
                &mut authenticated,
            );
            self.resp3 = resp3;
            self.authenticated = authenticated;
            reply.extend_from_slice(&bytes);
            return self.answered(now);
        }
        if !self.authenticated && !is(b"QUIT") {
            resp::write_error(reply, "NOAUTH Authentication required.");
            return self.answered(now);
        }
        if let Some(answer) = self.transaction_answer(name) {
            match answer {
                Ok(text) => resp::write_simple(reply, text),
                Err(text) => resp::write_error(reply, text),
            }
            return self.answered(now);
        }
        let command = match Command::parse(arguments) {
            Ok(command) => command,
            Err(error) => {
                resp::write_error(reply, &error.to_string());
                return self.answered(now);
            }
        };
        let access = access_of(&command);
        if self.must_wait(&access) {
            self.blocked = true;
            return Step::Wait;
        }
        self.blocked = false;
        self.begin(&access);
        if matches!(command, Command::Quit) {
            self.ended = true;
        }
        let tag = self.pipeline.start(Pending {
            kind: CommandKind::of(&command),
            started: now,
            access,
        });
        Step::Run { tag, command }
    }

    /// The reply to a transaction command, or to any command while a transaction
    /// lasts; `None` when `name` runs as usual. `Ok` texts are simple strings.
    fn transaction_answer(&mut self, name: &[u8]) -> Option<Result<&'static str, &'static str>> {
        let is = |word: &[u8]| name.eq_ignore_ascii_case(word);
        if self.refusing_transaction {
            if is(b"EXEC") {
                self.refusing_transaction = false;
                return Some(Err(EXEC_ABORTED));
            }
            if is(b"DISCARD") {
                self.refusing_transaction = false;
                return Some(Ok("OK"));
            }
            if is(b"QUIT") {
                return None;
            }
            return Some(Err(REFUSED_IN_TRANSACTION));
        }
        if is(b"MULTI") {
            self.refusing_transaction = true;
            return Some(Ok("OK"));
        }
        if is(b"EXEC") {
            return Some(Err("ERR EXEC without MULTI"));
        }
        if is(b"DISCARD") {
            return Some(Err("ERR DISCARD without MULTI"));
        }
        if is(b"WATCH") || is(b"UNWATCH") {
            return Some(Err(WATCH_REFUSED));
        }
        None
    }

    /// A reply made here, in the request's turn.
    fn answered<'a>(&mut self, now: Instant) -> Step<'a> {
        let tag = self.pipeline.start(Pending {
            kind: CommandKind::Other,
            started: now,
            access: Access::Free,
        });
        Step::Replied { tag }
    }

    /// A protocol error: nothing more is parsed.
    fn refuse<'a>(&mut self, now: Instant, reason: &str, reply: &mut Vec<u8>) -> Step<'a> {
        log::debug!("client protocol error: {reason}");
        reply.clear();
        resp::write_error(reply, &format!("ERR Protocol error: {reason}"));
        self.ended = true;
        self.skip = None;
        match self.answered(now) {
            Step::Replied { tag } => Step::Refused { tag },
            other => other,
        }
    }

    /// True when a request with `access` must wait for earlier ones of this
    /// connection.
    fn must_wait(&self, access: &Access) -> bool {
        if self.unordered || matches!(access, Access::Free) || self.ordered == 0 {
            return false;
        }
        if self.barriers > 0 {
            return true;
        }
        let Some((keys, write)) = access.keys() else {
            return true; // a barrier, behind ordered requests
        };
        keys.iter().any(|key| match self.keys.get(key) {
            Some(&(_, writes)) if !write => writes > 0,
            Some(_) => true,
            None => false,
        })
    }

    fn begin(&mut self, access: &Access) {
        match access.keys() {
            Some((keys, write)) => {
                for key in keys {
                    let uses = self.keys.entry(*key).or_default();
                    if write {
                        uses.1 += 1;
                    } else {
                        uses.0 += 1;
                    }
                }
            }
            None if matches!(access, Access::Barrier) => self.barriers += 1,
            None => return,
        }
        self.ordered += 1;
    }

    fn end(&mut self, access: &Access) {
        match access.keys() {
            Some((keys, write)) => {
                for key in keys {
                    let Some(uses) = self.keys.get_mut(key) else {
                        continue;
                    };
                    if write {
                        uses.1 = uses.1.saturating_sub(1);
                    } else {
                        uses.0 = uses.0.saturating_sub(1);
                    }
                    if *uses == (0, 0) {
                        self.keys.remove(key);
                    }
                }
            }
            None if matches!(access, Access::Barrier) => {
                self.barriers = self.barriers.saturating_sub(1)
            }
            None => return,
        }
        self.ordered = self.ordered.saturating_sub(1);
    }

    /// Files the reply of `tag` and writes, through `out`, every reply now next in
    /// order (see [`Pipeline::finish`]). `None` for a tag that is not waiting.
    pub fn finish(
        &mut self,
        tag: u64,
        reply: &[u8],
        close: bool,
        out: impl FnMut(&[u8]),
    ) -> Option<Finished> {
        let was_full = self.pipeline.is_full();
        let (pending, closing) = self.pipeline.finish(tag, reply, close, out)?;
        self.end(&pending.access);
        let unblocked = self.blocked && !matches!(pending.access, Access::Free);
        let resume = unblocked || (was_full && !self.pipeline.is_full());
        if resume {
            // Parsing again decides whether the request it stopped at may go now.
            self.blocked = false;
        }
        Some(Finished {
            kind: pending.kind,
            started: pending.started,
            closing,
            resume,
        })
    }
}

/// How `command` orders against the connection's other requests.
fn access_of(command: &Command<'_>) -> Access {
    let keys = |keys: &[&[u8]], write: bool| match keys {
        [key] => Access::One {
            key: key_hash(key),
            write,
        },
        _ => Access::Many {
            keys: keys.iter().map(|key| key_hash(key)).collect(),
            write,
        },
    };
    match command {
        Command::Get { key } | Command::VGet { key, .. } => keys(&[key], false),
        Command::Exists { keys: named } => keys(named, false),
        Command::Set { key, .. } | Command::VSet { key, .. } | Command::VDel { key, .. } => {
            keys(&[key], true)
        }
        Command::Del { keys: named } => keys(named, true),
        Command::Admin(_) => Access::Barrier,
        Command::Ping { .. }
        | Command::Echo { .. }
        | Command::Quit
        | Command::Command
        | Command::ConfigGet { .. }
        | Command::Info { .. }
        | Command::ClientSetName { .. } => Access::Free,
    }
}

/// The reply to a wrong user or password (Redis's text).
const WRONG_PASSWORD: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Whether `user` (the default user when `None`) may log in with `password` when the
/// node wants `required` (Redis's rules: one user, `default`; with no password set,
/// the two-argument form accepts any password and the one-argument form is an error).
fn check_password(
    required: Option<&str>,
    user: Option<&[u8]>,
    password: &[u8],
) -> Result<(), &'static str> {
    if user.is_some_and(|user| user != b"default") {
        return Err(WRONG_PASSWORD);
    }
    let Some(required) = required else {
        return match user {
            Some(_) => Ok(()),
            None => Err(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            ),
        };
    };
    // Compared in time independent of where the first difference is.
    let differs = required.len() != password.len()
        || required
            .bytes()
            .zip(password)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            != 0;
    if differs { Err(WRONG_PASSWORD) } else { Ok(()) }
}

/// `AUTH <password>` or `AUTH <user> <password>`.
fn auth(arguments: &[&[u8]], required: Option<&str>) -> Result<(), &'static str> {
    match arguments {
        [_, password] => check_password(required, None, password),
        [_, user, password] => check_password(required, Some(user), password),
        _ => Err("ERR wrong number of arguments for 'auth' command"),
    }
}

/// `HELLO [protover [AUTH user password] [SETNAME name]]`: the protocol switch newer
/// client libraries start with (redis-py 8 asks for RESP3 by default). ringkv's
/// replies are RESP2 and RESP3 alike except the null, which the frontend swaps for a
/// RESP3 connection; so both versions are offered. Returns the connection's protocol
/// after the command, and the reply. `authenticated` is the connection's standing,
/// which the AUTH option may grant; an unauthenticated HELLO without it is refused as
/// Redis refuses it.
fn hello(
    arguments: &[&[u8]],
    resp3: bool,
    connection_id: u64,
    required: Option<&str>,
    authenticated: &mut bool,
) -> (bool, Vec<u8>) {
    let mut reply = Vec::new();
    let version = match arguments.get(1) {
        None => Some(if resp3 { 3 } else { 2 }),
        Some(v) if *v == b"2" => Some(2),
        Some(v) if *v == b"3" => Some(3),
        Some(_) => None,
    };
    let Some(version) = version else {
        resp::write_error(
            &mut reply,
            "NOPROTO sorry, this protocol version is not supported",
        );
        return (resp3, reply);
    };
    let mut rest = arguments.get(2..).unwrap_or_default();
    while let Some((option, after)) = rest.split_first() {
        if option.eq_ignore_ascii_case(b"SETNAME") && !after.is_empty() {
            rest = &after[1..];
        } else if option.eq_ignore_ascii_case(b"AUTH") && after.len() >= 2 {
            if let Err(error) = check_password(required, Some(after[0]), after[1]) {
                resp::write_error(&mut reply, error);
                return (resp3, reply);
            }
            *authenticated = true;
            rest = &after[2..];
        } else {
            resp::write_error(&mut reply, "ERR syntax error in HELLO");
            return (resp3, reply);
        }
    }
    if !*authenticated {
        resp::write_error(
            &mut reply,
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        );
        return (resp3, reply);
    }
    let fields: [(&str, HelloValue<'_>); 7] = [
        ("server", HelloValue::Text("ringkv")),
        ("version", HelloValue::Text(env!("CARGO_PKG_VERSION"))),
        ("proto", HelloValue::Number(version)),
        ("id", HelloValue::Number(connection_id & 0xffff_ffff)),
        ("mode", HelloValue::Text("standalone")),
        ("role", HelloValue::Text("master")),
        ("modules", HelloValue::Empty),
    ];
    if version == 3 {
        reply.extend_from_slice(format!("%{}\r\n", fields.len()).as_bytes());
    } else {
        resp::write_array_header(&mut reply, fields.len() * 2);
    }
    for (name, value) in fields {
        resp::write_bulk(&mut reply, name.as_bytes());
        match value {
            HelloValue::Text(text) => resp::write_bulk(&mut reply, text.as_bytes()),
            HelloValue::Number(n) => resp::write_integer(&mut reply, n as i64),
            HelloValue::Empty => resp::write_array_header(&mut reply, 0),
        }
    }
    (version == 3, reply)
}

enum HelloValue<'a> {
    Text(&'a str),
    Number(u64),
    Empty,
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SessionLimits<'static> = SessionLimits {
        resp: RespLimits {
            bulk_size_bytes_max: 64,
            arguments_max: 16,
            inline_size_bytes_max: 256,
            bulk_skip_bytes_max: 1 << 20,
        },
        read_buffer_bytes_max: 1024,
        value_size_bytes_max: 48,
        password: None,
    };

    /// What one `next` call did, owned.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Wait,
        Replied(u64, String),
        Refused(u64, String),
        Run(u64, String),
    }

    /// Feeds `input` until the session waits; returns the steps and the bytes used.
    fn feed(session: &mut Session, input: &[u8]) -> (Vec<Seen>, usize) {
        let mut reply = Vec::new();
        let (mut used, mut seen) = (0, Vec::new());
        loop {
            let (n, step) = session.next(&input[used..], Instant::ZERO, LIMITS, &mut reply);
            used += n;
            let text = String::from_utf8_lossy(&reply).into_owned();
            seen.push(match step {
                Step::Wait => Seen::Wait,
                Step::Replied { tag } => Seen::Replied(tag, text),
                Step::Refused { tag } => Seen::Refused(tag, text),
                Step::Run { tag, command } => Seen::Run(tag, format!("{command:?}")),
            });
            if matches!(seen.last(), Some(Seen::Wait)) {
                return (seen, used);
            }
        }
    }

    fn finish(session: &mut Session, tag: u64) -> Finished {
        session.finish(tag, b"+OK\r\n", false, |_| {}).unwrap()
    }

    #[test]
    fn a_pipelined_read_waits_for_an_earlier_write_of_its_key() {
        let mut session = Session::new(1, true);
        let input = b"SET rk new\r\nGET rk\r\nGET other\r\n";
        let (seen, used) = feed(&mut session, input);
        assert!(matches!(seen[0], Seen::Run(0, _)), "{seen:?}");
        assert_eq!(seen[1], Seen::Wait, "GET rk must not run beside SET rk");
        assert_eq!(used, 12, "only the SET was consumed");
        assert!(session.is_paused(), "reading stops while parsing waits");
        let finished = finish(&mut session, 0);
        assert!(finished.resume, "the SET's reply lets parsing go on");
        let (seen, used) = feed(&mut session, &input[12..]);
        assert!(
            matches!(&seen[0], Seen::Run(1, c) if c.contains("Get")),
            "{seen:?}"
        );
        assert!(matches!(&seen[1], Seen::Run(2, _)), "{seen:?}");
        assert_eq!(used, input.len() - 12);
    }

    #[test]
    fn independent_keys_and_reads_of_one_key_run_concurrently() {
        let mut session = Session::new(1, true);
        let input = b"SET a 1\r\nSET b 2\r\nGET c\r\nGET c\r\nEXISTS c d\r\nPING\r\n";
        let (seen, used) = feed(&mut session, input);
        assert_eq!(used, input.len());
        assert_eq!(
            seen.iter().filter(|s| matches!(s, Seen::Run(..))).count(),
            6
        );
        // A write behind reads of its key waits for them (the reads must not see it).
        let (seen, used) = feed(&mut session, b"DEL x c\r\n");
        assert_eq!((seen[0].eq(&Seen::Wait), used), (true, 0));
        for tag in [2, 3] {
            finish(&mut session, tag);
        }
        assert_eq!(
            feed(&mut session, b"DEL x c\r\n").1,
            0,
            "EXISTS c d still reads c"
        );
        assert!(finish(&mut session, 4).resume);
        assert!(matches!(
            feed(&mut session, b"DEL x c\r\n").0[0],
            Seen::Run(6, _)
        ));
    }

    #[test]
    fn admin_commands_wait_for_everything_before_them_and_hold_back_what_follows() {
        let mut session = Session::new(1, true);
        let (seen, used) = feed(&mut session, b"SET a 1\r\nRINGKV.DIGEST\r\nGET b\r\n");
        assert!(matches!(seen[0], Seen::Run(0, _)) && seen[1] == Seen::Wait && used == 9);
        finish(&mut session, 0);
        let (seen, _) = feed(&mut session, b"RINGKV.DIGEST\r\nGET b\r\nPING\r\n");
        assert!(
            matches!(seen[0], Seen::Run(1, _)) && seen[1] == Seen::Wait,
            "{seen:?}"
        );
    }

    #[test]
    fn a_transaction_applies_nothing_up_to_exec_or_discard() {
        let mut session = Session::new(1, true);
        let input = b"MULTI\r\nSET a 1\r\nINCR a\r\nEXEC\r\nSET a 2\r\n";
        let (seen, used) = feed(&mut session, input);
        assert_eq!(used, input.len());
        let texts: Vec<&str> = seen
            .iter()
            .map(|s| match s {
                Seen::Replied(_, text) => text.as_str(),
                Seen::Run(_, command) => command.as_str(),
                _ => "",
            })
            .collect();
        assert_eq!(texts[0], "+OK\r\n", "{texts:?}");
        assert!(texts[1].starts_with("-ERR not applied: ringkv has no transactions"));
        assert!(texts[2].starts_with("-ERR not applied"), "{texts:?}");
        assert!(texts[3].starts_with("-EXECABORT"), "{texts:?}");
        assert!(
            texts[4].contains("Set"),
            "after EXEC commands run again: {texts:?}"
        );
        let (seen, _) = feed(&mut session, b"MULTI\r\nDISCARD\r\nEXEC\r\nWATCH a\r\n");
        assert!(matches!(&seen[1], Seen::Replied(_, t) if t == "+OK\r\n"));
        assert!(matches!(&seen[2], Seen::Replied(_, t) if t.contains("EXEC without MULTI")));
        assert!(matches!(&seen[3], Seen::Replied(_, t) if t.contains("WATCH is not supported")));
    }

    #[test]
    fn an_oversize_value_gets_an_error_and_the_connection_stays_usable() {
        let mut session = Session::new(1, true);
        let mut input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\n".to_vec();
        let header = input.len();
        input.extend_from_slice(&[b'v'; 100]);
        input.extend_from_slice(b"\r\nGET k\r\n");
        // The value arrives in two pieces; the first is dropped as it comes.
        let (seen, used) = feed(&mut session, &input[..header + 40]);
        assert!(
            matches!(&seen[0], Seen::Replied(0, t) if t.starts_with("-ERR value too large: 100 bytes, the limit is 48")),
            "{seen:?}"
        );
        assert_eq!(used, header + 40, "nothing of the value is kept");
        let (seen, used) = feed(&mut session, &input[header + 40..]);
        assert!(
            matches!(&seen[0], Seen::Run(1, c) if c.contains("Get")),
            "{seen:?}"
        );
        assert_eq!(used, input.len() - header - 40);
        // Past the protocol maximum the length is a protocol error, and nothing after.
        let (seen, _) = feed(&mut session, b"*2\r\n$3\r\nGET\r\n$99999999\r\n");
        assert!(matches!(&seen[0], Seen::Refused(_, t) if t.contains("Protocol error")));
        assert_eq!(feed(&mut session, b"PING\r\n").0, vec![Seen::Wait]);
    }

    #[test]
    fn nothing_after_quit_is_parsed() {
        let mut session = Session::new(1, true);
        let (seen, used) = feed(&mut session, b"QUIT\r\nSET a 1\r\n");
        assert!(matches!(&seen[0], Seen::Run(0, c) if c == "Quit") && seen[1] == Seen::Wait);
        assert_eq!(used, 6);
    }

    #[test]
    fn until_authenticated_only_auth_hello_and_quit_are_answered() {
        let limits = SessionLimits {
            password: Some("pw"),
            ..LIMITS
        };
        let mut session = Session::new(1, false);
        let mut reply = Vec::new();
        let (_, step) = session.next(b"GET a\r\n", Instant::ZERO, limits, &mut reply);
        assert!(matches!(step, Step::Replied { .. }) && reply.starts_with(b"-NOAUTH"));
        let (_, step) = session.next(b"AUTH pw\r\n", Instant::ZERO, limits, &mut reply);
        assert!(matches!(step, Step::Replied { .. }) && reply == b"+OK\r\n");
        let (_, step) = session.next(b"GET a\r\n", Instant::ZERO, limits, &mut reply);
        assert!(matches!(step, Step::Run { .. }));
    }

    #[test]
    fn hello_offers_resp2_and_resp3_and_refuses_others() {
        let mut yes = true;
        let (resp3, reply) = hello(&[b"HELLO", b"3"], false, 7, None, &mut yes);
        assert!(resp3);
        assert!(reply.starts_with(b"%7\r\n$6\r\nserver\r\n$6\r\nringkv\r\n"));
        let (resp3, reply) = hello(
            &[b"hello", b"2", b"SETNAME", b"app"],
            true,
            7,
            None,
            &mut yes,
        );
        assert!(!resp3);
        assert!(reply.starts_with(b"*14\r\n"));
        let (resp3, reply) = hello(&[b"HELLO", b"4"], true, 7, None, &mut yes);
        assert!(resp3, "unchanged");
        assert!(reply.starts_with(b"-NOPROTO"));
    }

    #[test]
    fn a_password_is_needed_only_when_set_and_only_the_right_one_opens() {
        let required = Some("s3cret");
        assert_eq!(auth(&[b"AUTH", b"s3cret"], required), Ok(()));
        assert_eq!(auth(&[b"AUTH", b"default", b"s3cret"], required), Ok(()));
        for wrong in [&b"s3cre"[..], b"s3cret!", b"S3cret", b""] {
            assert_eq!(auth(&[b"AUTH", wrong], required), Err(WRONG_PASSWORD));
        }
        assert_eq!(
            auth(&[b"AUTH", b"admin", b"s3cret"], required),
            Err(WRONG_PASSWORD)
        );
        assert!(
            auth(&[b"AUTH"], required)
                .unwrap_err()
                .contains("wrong number")
        );
        assert!(
            auth(&[b"AUTH", b"x"], None)
                .unwrap_err()
                .contains("without any password")
        );
        assert_eq!(auth(&[b"AUTH", b"default", b"x"], None), Ok(()));

        // HELLO refuses an unauthenticated client unless it carries AUTH.
        let mut authenticated = false;
        let (_, reply) = hello(&[b"HELLO", b"3"], false, 7, required, &mut authenticated);
        assert!(reply.starts_with(b"-NOAUTH"));
        let wrong: [&[u8]; 5] = [b"HELLO", b"3", b"AUTH", b"default", b"nope"];
        let (resp3, reply) = hello(&wrong, false, 7, required, &mut authenticated);
        assert!(reply.starts_with(b"-WRONGPASS") && !resp3 && !authenticated);
        let right: [&[u8]; 5] = [b"HELLO", b"3", b"AUTH", b"default", b"s3cret"];
        let (resp3, reply) = hello(&right, false, 7, required, &mut authenticated);
        assert!(reply.starts_with(b"%7") && resp3 && authenticated);
    }
}
