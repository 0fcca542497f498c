//! ringkv-client: the Rust client for ringkv.
//!
//! Single responsibility: let an application talk to a ringkv cluster over RESP the
//! Dynamo way: any node can take any request, reads return every concurrent sibling
//! with an opaque context, and a write hands that context back so it supersedes exactly
//! what was read. This crate adds connections, failover between nodes and the
//! read-merge-write loop; `examples/shopping_cart.rs` shows the paper's cart merge.
//!
//! ```no_run
//! let mut client = ringkv_client::Client::new(["127.0.0.1:7379".parse().unwrap()]).unwrap();
//! let cart = client.get(b"cart:alice").unwrap();
//! client.put(b"cart:alice", &cart.context, b"book").unwrap();
//! ```
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod client;
pub mod endpoints;
pub mod reply;

pub use client::{Client, ClientError, ClientOptions, Versions};
pub use endpoints::{Endpoints, NoEndpoints};
pub use reply::Reply;
