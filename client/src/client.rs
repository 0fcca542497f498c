//! The client: one connection at a time to one node of the cluster, failing over to the
//! others, and Dynamo's interface on top of RESP.
//!
//! - [`Client::get`] is `VGET`: every concurrent sibling and the opaque context that
//!   names what was read. [`Client::put`] (`VSET`) hands the context back, so the write
//!   supersedes exactly those siblings; two puts with the same context are concurrent
//!   and both survive as siblings. [`Client::delete`] (`VDEL`) is a put of a tombstone.
//! - [`Client::update`] is the read-merge-write loop: read the siblings, let the
//!   application merge them into one value, write it back with the context.
//! - Failover: a request goes to the node that answered last; when its connection
//!   fails (connect, write or read error, or a timeout), or the node answers that the
//!   cluster could not complete it in time (`-TIMEOUT`, `-UNAVAILABLE`: typically a
//!   replica died while it held the request), the client tries each other node once.
//!   Such a request may have been applied: a retried put then leaves at most a second
//!   sibling with the same value (a plain GET picks one; the next `update` merges
//!   them), and a retried delete is a delete. This is at-least-once, as Dynamo's
//!   clients retry. Other server errors (`-ERR`, `-OVERLOADED`, ...) are returned as
//!   they are. [`ClientOptions::retry_unavailable`] turns the retry off.

use crate::endpoints::{Endpoints, NoEndpoints};
use crate::reply::{Malformed, Reply, ReplyLimits, parse_reply, write_request};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// What went wrong with a request.
#[derive(Debug)]
pub enum ClientError {
    /// No node could be reached; the last node's error.
    Unreachable { tried: usize, last: io::Error },
    /// A node answered with a RESP error (its text, e.g. `UNAVAILABLE ...`).
    Server(String),
    /// A node answered with something that is not RESP, or not the expected shape.
    Protocol(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable { tried, last } => {
                write!(f, "no ringkv node answered ({tried} tried; last: {last})")
            }
            ClientError::Server(text) => write!(f, "server error: {text}"),
            ClientError::Protocol(text) => write!(f, "protocol error: {text}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<Malformed> for ClientError {
    fn from(error: Malformed) -> ClientError {
        ClientError::Protocol(error.to_string())
    }
}

/// A key's siblings and the context that names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versions {
    /// Opaque; hand it back to `put` or `delete`.
    pub context: Vec<u8>,
    /// Every concurrent value (empty when the key does not exist or was deleted).
    pub siblings: Vec<Vec<u8>>,
}

/// Settings of a client.
#[derive(Clone, Copy, Debug)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// Longest wait for one reply (a node's own request timeout is 2 s by default).
    pub reply_timeout: Duration,
    pub limits: ReplyLimits,
    /// Retry `-TIMEOUT` and `-UNAVAILABLE` replies on the other nodes (default on).
    pub retry_unavailable: bool,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            connect_timeout: Duration::from_secs(1),
            reply_timeout: Duration::from_secs(5),
            limits: ReplyLimits::default(),
            retry_unavailable: true,
        }
    }
}

#[derive(Debug)]
struct Connection {
    address: SocketAddr,
    stream: TcpStream,
    buffer: Vec<u8>,
}

/// A ringkv client. Not shared between threads: make one per thread.
#[derive(Debug)]
pub struct Client {
    endpoints: Endpoints,
    options: ClientOptions,
    connection: Option<Connection>,
    request: Vec<u8>,
}

impl Client {
    /// A client for the nodes at `addresses` (it connects on first use).
    pub fn new(addresses: impl IntoIterator<Item = SocketAddr>) -> Result<Client, NoEndpoints> {
        Client::with_options(addresses, ClientOptions::default())
    }

    pub fn with_options(
        addresses: impl IntoIterator<Item = SocketAddr>,
        options: ClientOptions,
    ) -> Result<Client, NoEndpoints> {
        Ok(Client {
            endpoints: Endpoints::new(addresses)?,
            options,
            connection: None,
            request: Vec::new(),
        })
    }

    /// The node the client talks to now, if connected.
    pub fn connected_to(&self) -> Option<SocketAddr> {
        self.connection.as_ref().map(|c| c.address)
    }

    /// Sends one command and returns its reply (RESP errors included, as
    /// [`Reply::Error`]), failing over to other nodes on connection failures.
    pub fn command(&mut self, arguments: &[&[u8]]) -> Result<Reply, ClientError> {
        self.request.clear();
        write_request(&mut self.request, arguments);
        let order: Vec<SocketAddr> = self.endpoints.attempt_order().collect();
        let mut last = io::Error::other("no node tried");
        let mut unavailable = None;
        for address in &order {
            match self.round_trip(*address) {
                Ok(Reply::Error(text))
                    if self.options.retry_unavailable && retried_error(&text) =>
                {
                    unavailable = Some(Reply::Error(text));
                }
                Ok(reply) => {
                    self.endpoints.record_success(*address);
                    return Ok(reply);
                }
                Err(RoundTrip::Io(error)) => {
                    self.connection = None;
                    last = error;
                }
                Err(RoundTrip::Malformed(error)) => {
                    self.connection = None;
                    return Err(error.into());
                }
            }
        }
        if let Some(reply) = unavailable {
            return Ok(reply);
        }
        Err(ClientError::Unreachable {
            tried: order.len(),
            last,
        })
    }

    fn round_trip(&mut self, address: SocketAddr) -> Result<Reply, RoundTrip> {
        if self
            .connection
            .as_ref()
            .is_none_or(|c| c.address != address)
        {
            let stream = TcpStream::connect_timeout(&address, self.options.connect_timeout)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(self.options.reply_timeout))?;
            self.connection = Some(Connection {
                address,
                stream,
                buffer: Vec::new(),
            });
        }
        let Some(connection) = self.connection.as_mut() else {
            return Err(RoundTrip::Io(io::Error::other("not connected")));
        };
        connection.stream.write_all(&self.request)?;
        loop {
            if let Some((reply, size)) = parse_reply(&connection.buffer, self.options.limits)? {
                connection.buffer.drain(..size);
                return Ok(reply);
            }
            let mut chunk = [0u8; 16 << 10];
            let read = connection.stream.read(&mut chunk)?;
            if read == 0 {
                return Err(RoundTrip::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            connection.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    /// `VGET key`: every sibling and the context.
    pub fn get(&mut self, key: &[u8]) -> Result<Versions, ClientError> {
        self.get_with(key, None)
    }

    /// `VGET key R r`: waits for `read_quorum` replicas (1..=N).
    pub fn get_with(
        &mut self,
        key: &[u8],
        read_quorum: Option<u8>,
    ) -> Result<Versions, ClientError> {
        let quorum = read_quorum.map(|r| r.to_string());
        let mut arguments: Vec<&[u8]> = vec![b"VGET", key];
        if let Some(quorum) = &quorum {
            arguments.extend_from_slice(&[b"R", quorum.as_bytes()]);
        }
        match self.command(&arguments)? {
            Reply::Array(Some(items)) => versions(items),
            other => Err(unexpected("VGET", other)),
        }
    }

    /// `VSET key context value`: supersedes what `context` names. Returns a token
    /// naming exactly `context` and this write: a later put or delete with it
    /// supersedes this write and what `context` named, and never a concurrent sibling
    /// this writer was not shown (read again to see and merge those).
    pub fn put(
        &mut self,
        key: &[u8],
        context: &[u8],
        value: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        self.put_with(key, context, value, None)
    }

    /// `VSET key context value W w`: acknowledged once `write_quorum` replicas hold it.
    pub fn put_with(
        &mut self,
        key: &[u8],
        context: &[u8],
        value: &[u8],
        write_quorum: Option<u8>,
    ) -> Result<Vec<u8>, ClientError> {
        let quorum = write_quorum.map(|w| w.to_string());
        let mut arguments: Vec<&[u8]> = vec![b"VSET", key, context, value];
        if let Some(quorum) = &quorum {
            arguments.extend_from_slice(&[b"W", quorum.as_bytes()]);
        }
        expect_context("VSET", self.command(&arguments)?)
    }

    /// `VDEL key context`: deletes what `context` names; returns a token naming
    /// `context` and the delete (as [`Client::put`]'s).
    pub fn delete(&mut self, key: &[u8], context: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.delete_with(key, context, None)
    }

    /// `VDEL key context W w`.
    pub fn delete_with(
        &mut self,
        key: &[u8],
        context: &[u8],
        write_quorum: Option<u8>,
    ) -> Result<Vec<u8>, ClientError> {
        let quorum = write_quorum.map(|w| w.to_string());
        let mut arguments: Vec<&[u8]> = vec![b"VDEL", key, context];
        if let Some(quorum) = &quorum {
            arguments.extend_from_slice(&[b"W", quorum.as_bytes()]);
        }
        expect_context("VDEL", self.command(&arguments)?)
    }

    /// Reads `key`, lets `merge` turn its siblings (none for a new key) into one value,
    /// and writes that back with the context read. Returns the value written.
    pub fn update(
        &mut self,
        key: &[u8],
        merge: impl FnOnce(&[Vec<u8>]) -> Vec<u8>,
    ) -> Result<Vec<u8>, ClientError> {
        let read = self.get(key)?;
        let value = merge(&read.siblings);
        self.put(key, &read.context, &value)?;
        Ok(value)
    }
}

/// The errors a node gives when the cluster could not complete a request in time.
fn retried_error(text: &str) -> bool {
    text.starts_with("TIMEOUT") || text.starts_with("UNAVAILABLE")
}

enum RoundTrip {
    Io(io::Error),
    Malformed(Malformed),
}

impl From<io::Error> for RoundTrip {
    fn from(error: io::Error) -> RoundTrip {
        RoundTrip::Io(error)
    }
}

impl From<Malformed> for RoundTrip {
    fn from(error: Malformed) -> RoundTrip {
        RoundTrip::Malformed(error)
    }
}

fn unexpected(command: &str, reply: Reply) -> ClientError {
    match reply {
        Reply::Error(text) => ClientError::Server(text),
        other => ClientError::Protocol(format!("{command} answered {other:?}")),
    }
}

/// VSET and VDEL answer the context of what they wrote.
fn expect_context(command: &str, reply: Reply) -> Result<Vec<u8>, ClientError> {
    match reply {
        Reply::Bulk(Some(context)) => Ok(context),
        other => Err(unexpected(command, other)),
    }
}

fn versions(items: Vec<Reply>) -> Result<Versions, ClientError> {
    let mut items = items.into_iter();
    let (Some(Reply::Bulk(Some(context))), Some(Reply::Array(Some(siblings))), None) =
        (items.next(), items.next(), items.next())
    else {
        return Err(ClientError::Protocol(
            "VGET did not answer [context, [values]]".to_owned(),
        ));
    };
    let siblings = siblings
        .into_iter()
        .map(|sibling| match sibling {
            Reply::Bulk(Some(value)) => Ok(value),
            other => Err(ClientError::Protocol(format!("a sibling is {other:?}"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Versions { context, siblings })
}
