//! The client protocol: RESP2, so redis-cli, redis-benchmark and Redis client libraries
//! work with ringkv (design.md section 7).
//!
//! - [`parse_request`] reads one request from the front of a byte buffer: a multibulk
//!   array (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what libraries and redis-cli send) or an
//!   inline line (`GET k\r\n`, what a person types over telnet). It borrows the
//!   arguments from the buffer, so pipelined input is parsed in place, one request per
//!   call, and it never allocates.
//! - Every length is checked against [`RespLimits`] before it is used, never an
//!   allocation. A bulk string over the size bound but under Redis's protocol maximum
//!   (512 MiB) is [`Parsed::TooLarge`]: the caller answers that request with an error
//!   and drops its bytes as they arrive ([`Skip`]), without buffering them, and the
//!   connection stays usable. Past the protocol maximum, an array longer than allowed,
//!   or malformed framing is a protocol error, answered before the connection closes.
//! - [`Command::parse`] turns arguments into a typed command; [`CommandError`] renders
//!   the errors Redis users expect (`-ERR unknown command ...`).
//! - The `write_*` functions append replies to a caller-owned buffer.
//!
//! Inline requests split on spaces and tabs only (no quoting); use a Redis client for
//! binary keys and values.

use crate::quorum::SyncWrites;
use smallvec::SmallVec;

/// Bounds on what a client may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RespLimits {
    /// Longest bulk string: the largest value plus slack for keys and context tokens.
    pub bulk_size_bytes_max: usize,
    /// Most arguments in one request.
    pub arguments_max: usize,
    /// Longest inline request line.
    pub inline_size_bytes_max: usize,
    /// Longest bulk string whose request is skipped with an error (the connection
    /// stays open); past it the length is a protocol error (Redis's
    /// `proto-max-bulk-len`, 512 MiB).
    pub bulk_skip_bytes_max: usize,
}

impl Default for RespLimits {
    fn default() -> RespLimits {
        RespLimits {
            bulk_size_bytes_max: crate::limits::VALUE_SIZE_BYTES_MAX + 64 * 1024,
            arguments_max: 1024,
            inline_size_bytes_max: 64 * 1024,
            bulk_skip_bytes_max: 512 << 20,
        }
    }
}

/// Arguments of one request, borrowed from the input buffer.
pub type Arguments<'a> = SmallVec<[&'a [u8]; 8]>;

/// What the front of a buffer holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// Not a whole request yet: read more bytes and call again.
    Incomplete,
    /// A protocol error; reply with it and close the connection.
    Invalid(&'static str),
    /// A whole request of `consumed` bytes (`arguments` may be empty for a blank
    /// inline line, which Redis ignores).
    Request {
        consumed: usize,
        arguments: Arguments<'a>,
    },
    /// A request with a bulk string of `size_bytes`, over the size bound: answer it
    /// with an error, drop its first `consumed` bytes, then drop the rest of it with
    /// `skip` as it arrives.
    TooLarge {
        consumed: usize,
        size_bytes: usize,
        skip: Skip,
    },
}

/// The rest of a request being dropped (see [`Parsed::TooLarge`]): bytes left of the
/// current bulk string (its CRLF included), then whole bulk strings left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skip {
    bytes_left: u64,
    bulks_left: u64,
}

impl Skip {
    /// True once the whole request was dropped.
    pub fn is_done(&self) -> bool {
        self.bytes_left == 0 && self.bulks_left == 0
    }

    /// Drops what of the request `input` holds; returns how many bytes it used. A
    /// bulk length that is malformed or past the protocol maximum is an error (close
    /// the connection, as for [`Parsed::Invalid`]).
    pub fn advance(&mut self, input: &[u8], limits: RespLimits) -> Result<usize, &'static str> {
        let mut used = 0;
        loop {
            let available = (input.len() - used) as u64;
            let dropped = self.bytes_left.min(available);
            self.bytes_left -= dropped;
            used += dropped as usize;
            if self.bytes_left > 0 || self.bulks_left == 0 {
                return Ok(used);
            }
            match input.get(used) {
                None => return Ok(used),
                Some(b'$') => {}
                Some(_) => return Err("expected '$' for a bulk string"),
            }
            let Some((length_line, data_start)) = line(input, used + 1) else {
                return match incomplete_unless_too_long(&input[used..], 32, "") {
                    Parsed::Incomplete => Ok(used),
                    _ => Err("invalid bulk length"),
                };
            };
            let length = match parse_length(length_line) {
                Some(length) if length >= 0 && length as usize <= limits.bulk_skip_bytes_max => {
                    length as u64
                }
                _ => return Err("invalid bulk length"),
            };
            used = data_start;
            self.bulks_left -= 1;
            self.bytes_left = length + 2;
        }
    }
}

/// Parses one request from the start of `input`.
pub fn parse_request(input: &[u8], limits: RespLimits) -> Parsed<'_> {
    match input.first() {
        None => Parsed::Incomplete,
        Some(b'*') => parse_multibulk(input, limits),
        Some(_) => parse_inline(input, limits),
    }
}

/// The line at `input[start..]` up to CRLF: `Some((line, index after CRLF))`.
fn line(input: &[u8], start: usize) -> Option<(&[u8], usize)> {
    let rest = input.get(start..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], start + end + 2))
}

/// A decimal length line like `123` (at most 18 digits, so it cannot overflow).
fn parse_length(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    Some(if negative { -value } else { value })
}

fn parse_multibulk(input: &[u8], limits: RespLimits) -> Parsed<'_> {
    // A length line is short; without CRLF in the first 32 bytes it is garbage.
    let Some((header, mut position)) = line(input, 1) else {
        return incomplete_unless_too_long(input, 32, "invalid multibulk length");
    };
    let Some(count) = parse_length(header) else {
        return Parsed::Invalid("invalid multibulk length");
    };
    if count <= 0 {
        return Parsed::Request {
            consumed: position,
            arguments: Arguments::new(),
        };
    }
    if count as usize > limits.arguments_max {
        return Parsed::Invalid("too many arguments in a request");
    }
    let mut arguments = Arguments::new();
    for index in 0..count {
        match input.get(position) {
            None => return Parsed::Incomplete,
            Some(b'$') => {}
            Some(_) => return Parsed::Invalid("expected '$' for a bulk string"),
        }
        let Some((length_line, data_start)) = line(input, position + 1) else {
            return incomplete_unless_too_long(&input[position..], 32, "invalid bulk length");
        };
        let length = match parse_length(length_line) {
            Some(length) if length >= 0 => length as usize,
            _ => return Parsed::Invalid("invalid bulk length"),
        };
        if length > limits.bulk_skip_bytes_max {
            return Parsed::Invalid("invalid bulk length");
        }
        if length > limits.bulk_size_bytes_max {
            return Parsed::TooLarge {
                consumed: data_start,
                size_bytes: length,
                skip: Skip {
                    bytes_left: length as u64 + 2,
                    bulks_left: (count - index - 1) as u64,
                },
            };
        }
        let data_end = data_start + length;
        if input.len() < data_end + 2 {
            return Parsed::Incomplete;
        }
        if &input[data_end..data_end + 2] != b"\r\n" {
            return Parsed::Invalid("bulk string not followed by CRLF");
        }
        arguments.push(&input[data_start..data_end]);
        position = data_end + 2;
    }
    Parsed::Request {
        consumed: position,
        arguments,
    }
}

fn incomplete_unless_too_long<'a>(input: &[u8], bound: usize, reason: &'static str) -> Parsed<'a> {
    if input.len() > bound {
        Parsed::Invalid(reason)
    } else {
        Parsed::Incomplete
    }
}

fn parse_inline(input: &[u8], limits: RespLimits) -> Parsed<'_> {
    let end = input.iter().position(|&b| b == b'\n');
    let Some(end) = end else {
        return incomplete_unless_too_long(
            input,
            limits.inline_size_bytes_max,
            "inline request too long",
        );
    };
    if end > limits.inline_size_bytes_max {
        return Parsed::Invalid("inline request too long");
    }
    let text = input[..end].strip_suffix(b"\r").unwrap_or(&input[..end]);
    let mut arguments = Arguments::new();
    for word in text
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|w| !w.is_empty())
    {
        if arguments.len() == limits.arguments_max {
            return Parsed::Invalid("too many arguments in a request");
        }
        arguments.push(word);
    }
    Parsed::Request {
        consumed: end + 1,
        arguments,
    }
}

/// Administrative commands under the `RINGKV.` prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminCommand<'a> {
    /// `RINGKV.MEMBERS`: the membership view.
    Members,
    /// `RINGKV.RING`: partition ownership summary.
    Ring,
    /// `RINGKV.JOIN <seed address>`: join the cluster that seed belongs to.
    Join { seed: &'a [u8] },
    /// `RINGKV.LEAVE`: hand off data and leave.
    Leave,
    /// `RINGKV.REMOVE <node id>`: take a member that will never return out of the
    /// view (as `nodetool removenode`); refused for a member that is up.
    Remove { id: u64 },
    /// `RINGKV.DIGEST`: the anti-entropy root of every partition this node replicates,
    /// so an operator (or a test) can see whether replicas agree.
    Digest,
}

/// A typed client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    Get {
        key: &'a [u8],
    },
    Set {
        key: &'a [u8],
        value: &'a [u8],
    },
    Del {
        keys: Arguments<'a>,
    },
    Exists {
        keys: Arguments<'a>,
    },
    /// `VGET key [R n]`: every sibling and the context.
    VGet {
        key: &'a [u8],
        read_quorum: Option<u8>,
    },
    /// `VSET key context value [W n] [SYNC one|all]`.
    VSet {
        key: &'a [u8],
        context: &'a [u8],
        value: &'a [u8],
        write_quorum: Option<u8>,
        sync: Option<SyncWrites>,
    },
    /// `VDEL key context [W n] [SYNC one|all]`.
    VDel {
        key: &'a [u8],
        context: &'a [u8],
        write_quorum: Option<u8>,
        sync: Option<SyncWrites>,
    },
    Ping {
        message: Option<&'a [u8]>,
    },
    Echo {
        message: &'a [u8],
    },
    Quit,
    /// `COMMAND` and its subcommands: answered minimally.
    Command,
    ConfigGet {
        pattern: &'a [u8],
    },
    Info {
        section: Option<&'a [u8]>,
    },
    ClientSetName {
        name: &'a [u8],
    },
    Admin(AdminCommand<'a>),
}

/// Why a request is not a command ringkv runs; `Display` gives the RESP error text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandError {
    Empty,
    Unknown { name: String },
    WrongArity { name: &'static str },
    Syntax(&'static str),
}

impl core::fmt::Display for CommandError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CommandError::Empty => f.write_str("ERR empty command"),
            CommandError::Unknown { name } => write!(f, "ERR unknown command '{name}'"),
            CommandError::WrongArity { name } => {
                write!(f, "ERR wrong number of arguments for '{name}' command")
            }
            CommandError::Syntax(reason) => write!(f, "ERR syntax error: {reason}"),
        }
    }
}

impl std::error::Error for CommandError {}

/// Longest command name shown back in an error (client bytes are untrusted).
const NAME_SHOWN_MAX: usize = 64;

fn quorum_option(arguments: &[&[u8]], name: &'static [u8]) -> Result<Option<u8>, CommandError> {
    match arguments {
        [] => Ok(None),
        [option, value] if option.eq_ignore_ascii_case(name) => {
            let text = core::str::from_utf8(value)
                .map_err(|_| CommandError::Syntax("quorum is not a number"))?;
            match text.parse::<u8>() {
                Ok(n) if n >= 1 => Ok(Some(n)),
                _ => Err(CommandError::Syntax("quorum must be a number from 1 to N")),
            }
        }
        _ => Err(CommandError::Syntax(
            "expected an R or W option with a number",
        )),
    }
}

/// A write's options, `W n` and `SYNC one|all`, each at most once, in any order.
fn write_options(arguments: &[&[u8]]) -> Result<(Option<u8>, Option<SyncWrites>), CommandError> {
    let (mut write_quorum, mut sync) = (None, None);
    for pair in arguments.chunks(2) {
        match pair {
            [option, value] if option.eq_ignore_ascii_case(b"SYNC") && sync.is_none() => {
                sync = Some(SyncWrites::parse(value).ok_or(CommandError::Syntax(
                    "SYNC takes one (the minting replica syncs) or all",
                ))?);
            }
            [option, _] if option.eq_ignore_ascii_case(b"W") && write_quorum.is_none() => {
                write_quorum = quorum_option(pair, b"W")?;
            }
            _ => {
                return Err(CommandError::Syntax(
                    "expected W <number> and SYNC one|all, each at most once",
                ));
            }
        }
    }
    Ok((write_quorum, sync))
}

impl<'a> Command<'a> {
    /// True for commands that read or write keys (they need a placement).
    pub fn is_data(&self) -> bool {
        matches!(
            self,
            Command::Get { .. }
                | Command::Set { .. }
                | Command::Del { .. }
                | Command::Exists { .. }
                | Command::VGet { .. }
                | Command::VSet { .. }
                | Command::VDel { .. }
        )
    }

    /// Types a request's arguments.
    pub fn parse(arguments: &[&'a [u8]]) -> Result<Command<'a>, CommandError> {
        let Some((name, rest)) = arguments.split_first() else {
            return Err(CommandError::Empty);
        };
        let mut upper = [0u8; 16];
        let known = name.len() <= upper.len();
        if known {
            upper[..name.len()].copy_from_slice(name);
            upper[..name.len()].make_ascii_uppercase();
        }
        let upper = &upper[..if known { name.len() } else { 0 }];
        let parsed = Command::data(upper, rest)
            .or_else(|| Command::server(upper, rest))
            .or_else(|| Command::admin(upper, rest));
        parsed.unwrap_or_else(|| {
            let shown = &name[..name.len().min(NAME_SHOWN_MAX)];
            Err(CommandError::Unknown {
                name: String::from_utf8_lossy(shown).into_owned(),
            })
        })
    }

    /// The data commands (reads, writes, deletes); None for another name.
    fn data(upper: &[u8], rest: &[&'a [u8]]) -> Option<Result<Command<'a>, CommandError>> {
        let arity = |name: &'static str| Err(CommandError::WrongArity { name });
        let command = match (upper, rest) {
            (b"GET", [key]) => Command::Get { key },
            (b"GET", _) => return Some(arity("get")),
            (b"SET", [key, value]) => Command::Set { key, value },
            (b"SET", [_, _, ..]) => {
                return Some(Err(CommandError::Syntax(
                    "SET options (EX, PX, NX, XX) are not supported",
                )));
            }
            (b"SET", _) => return Some(arity("set")),
            (b"DEL", [_, ..]) => Command::Del {
                keys: rest.iter().copied().collect(),
            },
            (b"DEL", _) => return Some(arity("del")),
            (b"EXISTS", [_, ..]) => Command::Exists {
                keys: rest.iter().copied().collect(),
            },
            (b"EXISTS", _) => return Some(arity("exists")),
            (b"VGET", [key, options @ ..]) => Command::VGet {
                key,
                read_quorum: match quorum_option(options, b"R") {
                    Ok(quorum) => quorum,
                    Err(error) => return Some(Err(error)),
                },
            },
            (b"VGET", _) => return Some(arity("vget")),
            (b"VSET", [key, context, value, options @ ..]) => match write_options(options) {
                Ok((write_quorum, sync)) => Command::VSet {
                    key,
                    context,
                    value,
                    write_quorum,
                    sync,
                },
                Err(error) => return Some(Err(error)),
            },
            (b"VSET", _) => return Some(arity("vset")),
            (b"VDEL", [key, context, options @ ..]) => match write_options(options) {
                Ok((write_quorum, sync)) => Command::VDel {
                    key,
                    context,
                    write_quorum,
                    sync,
                },
                Err(error) => return Some(Err(error)),
            },
            (b"VDEL", _) => return Some(arity("vdel")),
            _ => return None,
        };
        Some(Ok(command))
    }

    /// The connection and server commands; None for another name.
    fn server(upper: &[u8], rest: &[&'a [u8]]) -> Option<Result<Command<'a>, CommandError>> {
        let arity = |name: &'static str| Err(CommandError::WrongArity { name });
        let command = match (upper, rest) {
            (b"PING", []) => Command::Ping { message: None },
            (b"PING", [message]) => Command::Ping {
                message: Some(message),
            },
            (b"PING", _) => return Some(arity("ping")),
            (b"ECHO", [message]) => Command::Echo { message },
            (b"ECHO", _) => return Some(arity("echo")),
            (b"QUIT", _) => Command::Quit,
            (b"COMMAND", _) => Command::Command,
            (b"CONFIG", [sub, pattern]) if sub.eq_ignore_ascii_case(b"GET") => {
                Command::ConfigGet { pattern }
            }
            (b"CONFIG", _) => {
                return Some(Err(CommandError::Syntax(
                    "only CONFIG GET <pattern> is supported",
                )));
            }
            (b"INFO", []) => Command::Info { section: None },
            (b"INFO", [section]) => Command::Info {
                section: Some(section),
            },
            (b"INFO", _) => return Some(arity("info")),
            (b"CLIENT", [sub, name]) if sub.eq_ignore_ascii_case(b"SETNAME") => {
                Command::ClientSetName { name }
            }
            // Client libraries announce themselves (redis-py, go-redis); accepted and
            // not kept, like the name.
            (b"CLIENT", [sub, _, _]) if sub.eq_ignore_ascii_case(b"SETINFO") => {
                Command::ClientSetName { name: b"" }
            }
            (b"CLIENT", _) => {
                return Some(Err(CommandError::Syntax(
                    "only CLIENT SETNAME <name> and CLIENT SETINFO are supported",
                )));
            }
            _ => return None,
        };
        Some(Ok(command))
    }

    /// ringkv's own admin commands; None for another name.
    fn admin(upper: &[u8], rest: &[&'a [u8]]) -> Option<Result<Command<'a>, CommandError>> {
        let arity = |name: &'static str| Err(CommandError::WrongArity { name });
        let command = match (upper, rest) {
            (b"RINGKV.MEMBERS", []) => Command::Admin(AdminCommand::Members),
            (b"RINGKV.RING", []) => Command::Admin(AdminCommand::Ring),
            (b"RINGKV.JOIN", [seed]) => Command::Admin(AdminCommand::Join { seed }),
            (b"RINGKV.LEAVE", []) => Command::Admin(AdminCommand::Leave),
            (b"RINGKV.DIGEST", []) => Command::Admin(AdminCommand::Digest),
            (b"RINGKV.REMOVE", [id]) => {
                let id = core::str::from_utf8(id)
                    .ok()
                    .and_then(|id| id.parse::<u64>().ok());
                match id {
                    Some(id) => Command::Admin(AdminCommand::Remove { id }),
                    None => return Some(Err(CommandError::Syntax("node id is not a number"))),
                }
            }
            (
                b"RINGKV.MEMBERS" | b"RINGKV.RING" | b"RINGKV.JOIN" | b"RINGKV.LEAVE"
                | b"RINGKV.DIGEST" | b"RINGKV.REMOVE",
                _,
            ) => {
                return Some(arity("ringkv admin"));
            }
            _ => return None,
        };
        Some(Ok(command))
    }
}

/// `+text\r\n` (`text` must not contain CR or LF).
pub fn write_simple(out: &mut Vec<u8>, text: &str) {
    out.push(b'+');
    out.extend(text.bytes().filter(|&b| b != b'\r' && b != b'\n'));
    out.extend_from_slice(b"\r\n");
}

/// `-text\r\n`, with CR and LF removed from `text`.
pub fn write_error(out: &mut Vec<u8>, text: &str) {
    out.push(b'-');
    out.extend(text.bytes().filter(|&b| b != b'\r' && b != b'\n'));
    out.extend_from_slice(b"\r\n");
}

/// `:n\r\n`.
pub fn write_integer(out: &mut Vec<u8>, value: i64) {
    out.push(b':');
    out.extend_from_slice(value.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `$len\r\nbytes\r\n`.
pub fn write_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// `$-1\r\n`: the null bulk string (a missing key).
pub fn write_null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// `*len\r\n`: an array header; the caller writes `length` elements after it.
pub fn write_array_header(out: &mut Vec<u8>, length: usize) {
    out.push(b'*');
    out.extend_from_slice(length.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Fuzz entry point: parsing arbitrary bytes as a stream of pipelined requests never
/// panics, always makes progress or stops, and every request types or errors cleanly.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_requests(data: &[u8]) {
    let limits = RespLimits {
        bulk_size_bytes_max: 4096,
        arguments_max: 16,
        inline_size_bytes_max: 256,
        bulk_skip_bytes_max: 1 << 20,
    };
    let mut input = data;
    loop {
        match parse_request(input, limits) {
            Parsed::Request {
                consumed,
                arguments,
            } => {
                assert!(consumed > 0 && consumed <= input.len());
                let _ = Command::parse(&arguments);
                input = &input[consumed..];
            }
            Parsed::TooLarge {
                consumed,
                size_bytes,
                mut skip,
            } => {
                assert!(size_bytes > limits.bulk_size_bytes_max && consumed <= input.len());
                input = &input[consumed..];
                let Ok(used) = skip.advance(input, limits) else {
                    return;
                };
                assert!(used <= input.len());
                input = &input[used..];
                if !skip.is_done() {
                    assert!(input.len() < 64, "a skip stops only for want of bytes");
                    return;
                }
            }
            Parsed::Incomplete | Parsed::Invalid(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(input: &[u8]) -> (usize, Vec<Vec<u8>>) {
        match parse_request(input, RespLimits::default()) {
            Parsed::Request {
                consumed,
                arguments,
            } => (consumed, arguments.iter().map(|a| a.to_vec()).collect()),
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn multibulk_and_inline_requests_parse_to_the_same_arguments() {
        let multibulk = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
        let (consumed, arguments) = request(multibulk);
        assert_eq!(consumed, multibulk.len());
        assert_eq!(
            arguments,
            [b"SET".to_vec(), b"key".to_vec(), b"value".to_vec()]
        );
        let (consumed, inline) = request(b"SET key  value\r\nGET key\r\n");
        assert_eq!(consumed, 16);
        assert_eq!(inline, arguments);
        assert_eq!(request(b"\r\n"), (2, vec![]), "a blank line is skipped");
    }

    #[test]
    fn pipelined_requests_parse_one_at_a_time() {
        let input = b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nPING\r\n";
        let (first, _) = request(input);
        let (second, echo) = request(&input[first..]);
        assert_eq!(echo[1], b"hi");
        let (third, ping) = request(&input[first + second..]);
        assert_eq!(first + second + third, input.len());
        assert_eq!(ping, [b"PING".to_vec()]);
    }

    #[test]
    fn every_prefix_of_a_request_is_incomplete_never_an_error() {
        let input = b"*2\r\n$3\r\nGET\r\n$10\r\n0123456789\r\n";
        for cut in 0..input.len() {
            assert_eq!(
                parse_request(&input[..cut], RespLimits::default()),
                Parsed::Incomplete,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn oversize_and_malformed_input_is_a_protocol_error_before_any_allocation() {
        let limits = RespLimits::default();
        let huge = format!("*1\r\n${}\r\n", limits.bulk_skip_bytes_max + 1);
        let long_inline = vec![b'a'; limits.inline_size_bytes_max + 1];
        let cases: [(&[u8], &str); 8] = [
            (huge.as_bytes(), "invalid bulk length"),
            (b"*99999\r\n", "too many arguments in a request"),
            (b"*x\r\n", "invalid multibulk length"),
            (b"*1\r\n:3\r\n", "expected '$' for a bulk string"),
            (b"*1\r\n$2\r\nabc\r\n", "bulk string not followed by CRLF"),
            (b"*1\r\n$-5\r\n", "invalid bulk length"),
            (&[b'*'; 40], "invalid multibulk length"),
            (&long_inline, "inline request too long"),
        ];
        for (input, reason) in cases {
            assert_eq!(
                parse_request(input, limits),
                Parsed::Invalid(reason),
                "{reason}"
            );
        }
    }

    #[test]
    fn an_oversize_bulk_is_skipped_as_it_arrives_and_the_next_request_parses() {
        let limits = RespLimits {
            bulk_size_bytes_max: 8,
            ..RespLimits::default()
        };
        let mut input = b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$20\r\n".to_vec();
        input.extend_from_slice(&[b'v'; 20]);
        input.extend_from_slice(b"\r\n$2\r\nEX\r\nPING\r\n");
        let Parsed::TooLarge {
            consumed,
            size_bytes,
            mut skip,
        } = parse_request(&input, limits)
        else {
            panic!("an oversize bulk is TooLarge");
        };
        assert_eq!(size_bytes, 20);
        // The rest arrives a few bytes at a time; each piece is dropped as it comes.
        let (mut position, mut arrived) = (consumed, consumed);
        while !skip.is_done() {
            assert!(arrived < input.len(), "the skip ends within the request");
            arrived = (arrived + 3).min(input.len());
            position += skip.advance(&input[position..arrived], limits).unwrap();
        }
        assert_eq!(
            &input[position..],
            b"PING\r\n",
            "the next request is intact"
        );
        let mut skip_bad = Skip {
            bytes_left: 0,
            bulks_left: 1,
        };
        assert!(skip_bad.advance(b"$999999999999\r\n", limits).is_err());
    }

    #[test]
    fn commands_type_their_arguments_case_insensitively() {
        let parse = |words: &[&'static [u8]]| Command::parse(words);
        assert_eq!(parse(&[b"get", b"k"]), Ok(Command::Get { key: b"k" }));
        assert_eq!(
            parse(&[b"VSET", b"k", b"ctx", b"v", b"w", b"2"]),
            Ok(Command::VSet {
                key: b"k",
                context: b"ctx",
                value: b"v",
                write_quorum: Some(2),
                sync: None
            })
        );
        assert_eq!(
            parse(&[b"VSET", b"k", b"ctx", b"v", b"sync", b"ALL", b"W", b"1"]),
            Ok(Command::VSet {
                key: b"k",
                context: b"ctx",
                value: b"v",
                write_quorum: Some(1),
                sync: Some(SyncWrites::All)
            })
        );
        assert_eq!(
            parse(&[b"VDEL", b"k", b"ctx", b"SYNC", b"one"]),
            Ok(Command::VDel {
                key: b"k",
                context: b"ctx",
                write_quorum: None,
                sync: Some(SyncWrites::One)
            })
        );
        let bad_options: [&[&'static [u8]]; 4] = [
            &[b"VSET", b"k", b"c", b"v", b"SYNC", b"some"],
            &[b"VSET", b"k", b"c", b"v", b"SYNC", b"one", b"SYNC", b"all"],
            &[b"VSET", b"k", b"c", b"v", b"W", b"1", b"W", b"2"],
            &[b"VDEL", b"k", b"c", b"SYNC"],
        ];
        for bad in bad_options {
            assert!(
                matches!(parse(bad), Err(CommandError::Syntax(_))),
                "{bad:?} is refused"
            );
        }
        assert_eq!(
            parse(&[b"vget", b"k", b"R", b"1"]),
            Ok(Command::VGet {
                key: b"k",
                read_quorum: Some(1)
            })
        );
        assert_eq!(
            parse(&[b"config", b"get", b"save"]),
            Ok(Command::ConfigGet { pattern: b"save" })
        );
        assert_eq!(
            parse(&[b"client", b"setname", b"app"]),
            Ok(Command::ClientSetName { name: b"app" })
        );
        assert_eq!(
            parse(&[b"client", b"SETINFO", b"LIB-NAME", b"redis-py"]),
            Ok(Command::ClientSetName { name: b"" })
        );
        assert_eq!(
            parse(&[b"ringkv.join", b"127.0.0.1:7380"]),
            Ok(Command::Admin(AdminCommand::Join {
                seed: b"127.0.0.1:7380"
            }))
        );
        assert!(
            matches!(parse(&[b"DEL", b"a", b"b"]), Ok(Command::Del { keys }) if keys.len() == 2)
        );
    }

    #[test]
    fn bad_commands_get_the_errors_redis_users_expect() {
        let error = |words: &[&'static [u8]]| Command::parse(words).unwrap_err().to_string();
        assert_eq!(error(&[b"FLUSHALL"]), "ERR unknown command 'FLUSHALL'");
        assert_eq!(
            error(&[b"GET"]),
            "ERR wrong number of arguments for 'get' command"
        );
        assert!(error(&[b"SET", b"k", b"v", b"EX", b"10"]).contains("not supported"));
        assert!(error(&[b"VGET", b"k", b"R", b"0"]).contains("quorum"));
        assert!(error(&[b"VGET", b"k", b"X", b"1"]).contains("R or W"));
        assert_eq!(Command::parse(&[]), Err(CommandError::Empty));
        static LONG: [u8; 500] = [b'x'; 500];
        assert!(
            error(&[&LONG[..]]).len() < 100,
            "an unknown name is cut short"
        );
    }

    #[test]
    fn replies_are_written_in_resp2() {
        let mut out = Vec::new();
        write_simple(&mut out, "OK");
        write_error(&mut out, "ERR bad\r\nthing");
        write_integer(&mut out, -3);
        write_bulk(&mut out, b"hi");
        write_null(&mut out);
        write_array_header(&mut out, 2);
        assert_eq!(
            out,
            b"+OK\r\n-ERR badthing\r\n:-3\r\n$2\r\nhi\r\n$-1\r\n*2\r\n"
        );
    }

    #[test]
    fn a_corrupted_byte_anywhere_never_panics_and_never_overreads() {
        let input = b"*3\r\n$4\r\nVSET\r\n$1\r\nk\r\n$3\r\nabc\r\nGET k\r\n";
        for at in 0..input.len() {
            for flip in [0x01u8, 0x20, 0x80, 0xFF] {
                let mut damaged = input.to_vec();
                damaged[at] ^= flip;
                fuzz_requests(&damaged);
            }
        }
    }

    #[test]
    fn the_fuzz_entry_point_handles_garbage_and_pipelines() {
        fuzz_requests(b"*1\r\n$4\r\nPING\r\nGET a\r\n*-1\r\n*0\r\n");
        fuzz_requests(&[0xFF, b'\n', b'*', b'9']);
    }
}
