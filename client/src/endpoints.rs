//! Which node to try next.
//!
//! Every ringkv node coordinates any request, so the client needs no placement
//! knowledge: it sticks to the last node that answered (its connection is warm) and,
//! when that node fails, tries the others in the order given, each at most once per
//! request. The list is fixed when the client is built; it is small (the seed nodes the
//! application was configured with), so a request never tries more than that many.

use core::fmt;
use std::net::SocketAddr;

/// The nodes a client may talk to, and the one it prefers now.
#[derive(Clone, Debug)]
pub struct Endpoints {
    addresses: Vec<SocketAddr>,
    preferred: usize,
}

/// A client was built with no node address at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoEndpoints;

impl fmt::Display for NoEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a ringkv client needs at least one node address")
    }
}

impl std::error::Error for NoEndpoints {}

impl Endpoints {
    /// The nodes to use, in the order to try them; duplicates are dropped.
    pub fn new(addresses: impl IntoIterator<Item = SocketAddr>) -> Result<Endpoints, NoEndpoints> {
        let mut unique: Vec<SocketAddr> = Vec::new();
        for address in addresses {
            if !unique.contains(&address) {
                unique.push(address);
            }
        }
        if unique.is_empty() {
            return Err(NoEndpoints);
        }
        Ok(Endpoints {
            addresses: unique,
            preferred: 0,
        })
    }

    /// Every node once, the preferred one first, then the rest in configured order.
    pub fn attempt_order(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let count = self.addresses.len();
        (0..count).map(move |step| self.addresses[(self.preferred + step) % count])
    }

    /// The node that last answered becomes the first one to try.
    pub fn record_success(&mut self, address: SocketAddr) {
        if let Some(index) = self.addresses.iter().position(|known| *known == address) {
            self.preferred = index;
        }
    }

    /// How many distinct nodes there are.
    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    /// Never true: construction refuses an empty list.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn an_empty_address_list_is_refused() {
        assert_eq!(Endpoints::new([]).unwrap_err(), NoEndpoints);
    }

    #[test]
    fn each_node_is_tried_once_starting_with_the_first() {
        let endpoints = Endpoints::new([address(1), address(2), address(3), address(2)]).unwrap();
        assert_eq!(endpoints.len(), 3);
        let order: Vec<_> = endpoints.attempt_order().collect();
        assert_eq!(order, [address(1), address(2), address(3)]);
    }

    #[test]
    fn the_node_that_answered_last_is_tried_first_then_the_rest_in_order() {
        let mut endpoints = Endpoints::new([address(1), address(2), address(3)]).unwrap();
        endpoints.record_success(address(3));
        let order: Vec<_> = endpoints.attempt_order().collect();
        assert_eq!(order, [address(3), address(1), address(2)]);
        // An address the client was not configured with changes nothing.
        endpoints.record_success(address(9));
        assert_eq!(endpoints.attempt_order().next(), Some(address(3)));
    }
}
