//! The Dynamo paper's shopping cart: two sessions add items to the same cart from the
//! same read (say, during a partition), so the cart has two siblings; the next update
//! merges them by union, and no added item is lost.
//!
//! Start a cluster (`cargo run --release --bin ringkv-node -- dev --nodes 3`), then
//! `cargo run -p ringkv-client --example shopping_cart [127.0.0.1:7379 ...]`.

use ringkv_client::Client;
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// A cart is its items, one per line.
fn items(value: &[u8]) -> BTreeSet<String> {
    String::from_utf8_lossy(value)
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

fn encode(items: &BTreeSet<String>) -> Vec<u8> {
    items
        .iter()
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes()
}

/// The cart merge: the union of every sibling (an add is never lost; a removal can
/// come back, as the paper says).
fn merge_carts(siblings: &[Vec<u8>]) -> BTreeSet<String> {
    siblings.iter().flat_map(|s| items(s)).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addresses: Vec<SocketAddr> = match std::env::args().skip(1).collect::<Vec<_>>() {
        given if !given.is_empty() => given.iter().map(|a| a.parse()).collect::<Result<_, _>>()?,
        _ => vec!["127.0.0.1:7379".parse()?, "127.0.0.1:7381".parse()?],
    };
    let mut phone = Client::new(addresses.clone())?;
    let mut laptop = Client::new(addresses.into_iter().rev())?;
    let key = format!("cart:example:{}", std::process::id());

    let start = phone.get(key.as_bytes())?;
    phone.put(key.as_bytes(), &start.context, b"book")?;
    // The laptop read before the phone's write reached it: it writes from the same
    // context, so the two carts are concurrent.
    laptop.put(key.as_bytes(), &start.context, b"pen")?;

    let both = phone.get(key.as_bytes())?;
    println!(
        "siblings after two concurrent adds: {}",
        both.siblings.len()
    );
    let merged = phone.update(key.as_bytes(), |siblings| {
        let mut cart = merge_carts(siblings);
        cart.insert("lamp".to_owned());
        encode(&cart)
    })?;
    println!("merged cart: {:?}", items(&merged));
    let after = laptop.get(key.as_bytes())?;
    println!(
        "siblings after the merge: {} ({:?})",
        after.siblings.len(),
        after.siblings.iter().map(|s| items(s)).collect::<Vec<_>>()
    );
    Ok(())
}
