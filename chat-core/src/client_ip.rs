//! Who a client is by address: the peer of the connection, or, when that
//! peer is a proxy the operator listed, the address the proxy says it
//! forwarded for (`X-Forwarded-For`). Limits per address key IPv6 clients
//! by their /64, the block one host or household is given.

use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

/// Networks whose connections are proxies: their `X-Forwarded-For` is
/// believed. Empty (the default): no header is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Network>);

/// An address block: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    base: IpAddr,
    prefix: u8,
}

/// A trusted-proxy entry that is not an address or a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or a network (10.0.0.0/8, fd00::/8)")]
pub struct NotANetwork(pub String);

impl FromStr for Network {
    type Err = NotANetwork;

    fn from_str(text: &str) -> Result<Self, NotANetwork> {
        let wrong = || NotANetwork(text.to_owned());
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let base: IpAddr = address.parse().map_err(|_| wrong())?;
        let base = canonical(base);
        let bits = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(wrong)?,
            None => bits,
        };
        Ok(Self {
            base: mask(base, prefix),
            prefix,
        })
    }
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.base.is_ipv4() && mask(ip, self.prefix) == self.base
    }
}

impl From<Vec<Network>> for TrustedProxies {
    fn from(networks: Vec<Network>) -> Self {
        Self(networks)
    }
}

impl TrustedProxies {
    /// The proxies of `entries` (addresses or blocks), or the first entry
    /// that is neither.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, NotANetwork> {
        entries
            .iter()
            .map(|e| e.as_ref())
            .filter(|e| !e.trim().is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(ip))
    }

    /// The client of a connection from `peer` whose request carried these
    /// `X-Forwarded-For` values: walking the chain from its right end (the
    /// hop nearest this server), the first address that is not a trusted
    /// proxy. A peer that is not a trusted proxy is the client itself,
    /// whatever its header says, and so is one whose header is not a list
    /// of addresses.
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl IntoIterator<Item = &'a str>,
    ) -> IpAddr {
        if !self.trusts(peer) {
            return canonical(peer);
        }
        let hops: Vec<&str> = forwarded_for
            .into_iter()
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let mut client = canonical(peer);
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.parse::<IpAddr>() else {
                // A chain the proxies did not write: stop at what they vouch for.
                return client;
            };
            client = canonical(ip);
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// `ip` with all but its first `prefix` bits cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = if prefix == 0 {
                0
            } else {
                bits & (u32::MAX << (32 - u32::from(prefix)))
            };
            IpAddr::V4(kept.into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = if prefix == 0 {
                0
            } else {
                bits & (u128::MAX << (128 - u32::from(prefix)))
            };
            IpAddr::V6(Ipv6Addr::from(kept))
        }
    }
}

/// The key of per-address limits: an IPv4 address itself, an IPv6 address
/// by its /64 (one host or household gets a whole /64, so each of its
/// addresses must not count as another client).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        v4 @ IpAddr::V4(_) => v4,
        v6 => mask(v6, 64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_ipv4_by_their_address() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            limit_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            limit_key(ip("2001:db8:1:2::7"))
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:3::1")),
            limit_key(ip("2001:db8:1:2::1"))
        );
        assert_eq!(limit_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(limit_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_listed_proxies() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8", "fd00::1"]).expect("valid");
        // (peer, its X-Forwarded-For, the client it is taken for, why)
        let cases: [(&str, Option<&str>, &str, &str); 7] = [
            (
                "192.0.2.9",
                Some("203.0.113.5"),
                "192.0.2.9",
                "not a listed proxy: its header is ignored",
            ),
            (
                "10.1.2.3",
                Some("203.0.113.5"),
                "203.0.113.5",
                "a listed proxy: the nearest address it does not vouch for",
            ),
            (
                "10.1.2.3",
                Some("198.51.100.1, 203.0.113.5, 10.9.9.9"),
                "203.0.113.5",
                "a spoofed left part is not believed",
            ),
            (
                "::ffff:10.1.2.3",
                Some("203.0.113.5"),
                "203.0.113.5",
                "a listed proxy as an IPv4-mapped address",
            ),
            (
                "fd00::1",
                Some("2001:db8::5"),
                "2001:db8::5",
                "a listed IPv6 proxy",
            ),
            ("10.1.2.3", None, "10.1.2.3", "no header: the proxy itself"),
            (
                "10.1.2.3",
                Some("unknown"),
                "10.1.2.3",
                "a header that is not addresses: the proxy itself",
            ),
        ];
        for (peer, forwarded, client, why) in cases {
            assert_eq!(proxies.client(ip(peer), forwarded), ip(client), "{why}");
        }
        // Nothing listed: nothing believed.
        assert_eq!(
            TrustedProxies::default().client(ip("10.1.2.3"), ["203.0.113.5"]),
            ip("10.1.2.3")
        );
        for bad in ["10.0.0.0/33", "fd00::/129", "proxy", "10.0.0.0/x"] {
            assert!(TrustedProxies::parse(&[bad]).is_err(), "{bad}");
        }
    }
}
