//! ringkv-client: the Rust client for ringkv.
//!
//! Single responsibility: let an application talk to a ringkv cluster over RESP the
//! Dynamo way: any node can take any request, reads return every concurrent sibling
//! with an opaque context, and a write hands that context back so it supersedes exactly
//! what was read. Codecs and version types come from `ringkv_core`; this crate adds
//! connections, failover between nodes and the read-merge-write loop.

pub mod endpoints;

pub use endpoints::{Endpoints, NoEndpoints};
