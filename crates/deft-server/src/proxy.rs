//! Who the client is when deft sits behind a reverse proxy.
//!
//! Behind a proxy every connection comes from the proxy's address, so limits keyed by the
//! TCP peer would put every client in one bucket, and one guesser would lock out everyone.
//! The proxy names the client in `X-Forwarded-For`; but anyone can send that header, so it is
//! believed only from the proxies the operator names (`[server] trusted_proxies`), and then
//! only as far as the chain of trusted proxies reaches.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::HeaderMap;

/// A `trusted_proxies` entry that is not an address or a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustedProxyError {
    #[error(
        "`{entry}` is not an IP address or a CIDR block; write an address like `127.0.0.1` or `::1`, or a block like `10.0.0.0/8` (host names are not accepted)"
    )]
    NotAnAddress { entry: String },
    #[error("`{entry}`: a /{prefix} block is too long; an {family} prefix is at most /{most}")]
    PrefixTooLong {
        entry: String,
        prefix: u32,
        family: &'static str,
        most: u32,
    },
}

/// An address block: the addresses whose first `prefix` bits are those of `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IpNet {
    base: IpAddr,
    prefix: u32,
}

impl IpNet {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, ip) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix).unwrap_or(0);
                u32::from(base) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix).unwrap_or(0);
                u128::from(base) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = TrustedProxyError;

    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let trimmed = entry.trim();
        let not_an_address = || TrustedProxyError::NotAnAddress {
            entry: entry.to_owned(),
        };
        let (address, prefix) = match trimmed.split_once('/') {
            Some((address, prefix)) => {
                let prefix = prefix
                    .parse::<u32>()
                    .ok()
                    .filter(|_| prefix.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(not_an_address)?;
                (address, Some(prefix))
            }
            None => (trimmed, None),
        };
        let base = address.parse::<IpAddr>().map_err(|_| not_an_address())?;
        let (family, most) = match base {
            IpAddr::V4(_) => ("IPv4", 32),
            IpAddr::V6(_) => ("IPv6", 128),
        };
        let prefix = prefix.unwrap_or(most);
        if prefix > most {
            return Err(TrustedProxyError::PrefixTooLong {
                entry: entry.to_owned(),
                prefix,
                family,
                most,
            });
        }
        // Peers are compared in canonical form (an IPv4 client of a dual-stack socket arrives
        // as `::ffff:a.b.c.d`), so a block written that way is kept as the IPv4 block it is.
        if let IpAddr::V6(v6) = base
            && let Some(v4) = v6.to_ipv4_mapped()
            && prefix >= 96
        {
            return Ok(IpNet {
                base: IpAddr::V4(v4),
                prefix: prefix - 96,
            });
        }
        Ok(IpNet { base, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// The proxies whose forwarding headers are believed; empty (the default) believes none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Arc<[IpNet]>,
}

/// Says once, not per request, that a forwarding header came from a peer not trusted: behind
/// a proxy that is not listed, every client shares the proxy's sign-in limit and the session
/// cookie loses `Secure`, and the log is where the operator finds out why.
fn warn_untrusted(peer: IpAddr, header: &str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            %peer,
            header,
            "ignoring a forwarding header from a peer not in `[server] trusted_proxies`; behind a reverse proxy, list the proxy there (or in DEFT_TRUSTED_PROXIES)"
        );
    }
}

impl TrustedProxies {
    /// Parses addresses (`127.0.0.1`, `::1`) and CIDR blocks (`10.0.0.0/8`, `fd00::/8`).
    pub fn parse<'a>(
        entries: impl IntoIterator<Item = &'a str>,
    ) -> Result<TrustedProxies, TrustedProxyError> {
        let nets = entries
            .into_iter()
            .map(str::parse)
            .collect::<Result<Vec<IpNet>, _>>()?;
        Ok(TrustedProxies { nets: nets.into() })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(ip))
    }

    /// The client's address: the TCP peer, unless the peer is a trusted proxy; then the
    /// right-most address of `X-Forwarded-For` that is not itself a trusted proxy. Entries
    /// left of that one were written by the client or by proxies nobody vouches for, so they
    /// are never read: a client cannot choose its own address.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        let forwarded = headers.get_all("x-forwarded-for");
        if !self.contains(peer) {
            if forwarded.iter().next().is_some() {
                warn_untrusted(peer, "X-Forwarded-For");
            }
            return peer;
        }
        // Several headers read as one list, in order.
        let mut client = peer;
        for value in forwarded.iter().rev() {
            let Ok(text) = value.to_str() else {
                return client;
            };
            for entry in text.rsplit(',') {
                // An entry that is not an address was written by a trusted proxy that could not
                // name its client; the nearest trusted hop stands in for it.
                let Some(ip) = forwarded_address(entry.trim()) else {
                    return client;
                };
                client = ip;
                if !self.contains(ip) {
                    return ip;
                }
            }
        }
        // Every hop is trusted: the request came from inside; the farthest hop is the client.
        client
    }

    /// Whether a trusted proxy says the client spoke HTTPS to it; a client's own
    /// `X-Forwarded-Proto` is not believed.
    pub fn forwarded_https(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        let Some(proto) = headers.get("x-forwarded-proto") else {
            return false;
        };
        if !self.contains(peer) {
            warn_untrusted(peer.to_canonical(), "X-Forwarded-Proto");
            return false;
        }
        proto
            .to_str()
            .ok()
            // A chain of proxies may append; the first is what the client spoke.
            .and_then(|value| value.split(',').next())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
    }
}

/// One `X-Forwarded-For` entry; some proxies add the client's port.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, net) in self.nets.iter().enumerate() {
            if n > 0 {
                f.write_str(", ")?;
            }
            net.fmt(f)?;
        }
        Ok(())
    }
}

/// The part of an address that one client controls: an IPv4 address, or an IPv6 /64, since
/// a single host is commonly handed a whole /64 and could otherwise take a fresh address for
/// every guess.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(forwarded: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_client_is_the_rightmost_address_no_trusted_proxy_wrote() {
        let trusted = TrustedProxies::parse(["127.0.0.1", "10.0.0.0/8"]).unwrap();
        // From a trusted proxy: the client it names, not what the client claimed before it.
        let spoofed = headers(&["6.6.6.6, 203.0.113.9"]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &spoofed), ip("203.0.113.9"));
        // Through two trusted proxies, and across several headers.
        let chain = headers(&["6.6.6.6", "203.0.113.9, 10.1.2.3"]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &chain), ip("203.0.113.9"));
        // An IPv4 peer of a dual-stack socket is still the trusted 127.0.0.1.
        assert_eq!(
            trusted.client(ip("::ffff:127.0.0.1"), &headers(&["198.51.100.1:5555"])),
            ip("198.51.100.1")
        );
        // From anyone else the header is ignored.
        assert_eq!(trusted.client(ip("192.0.2.1"), &spoofed), ip("192.0.2.1"));
        assert_eq!(
            TrustedProxies::default().client(ip("127.0.0.1"), &spoofed),
            ip("127.0.0.1")
        );
        // No header, a garbled entry, or only trusted hops: the nearest address known.
        assert_eq!(
            trusted.client(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
        assert_eq!(
            trusted.client(
                ip("127.0.0.1"),
                &headers(&["203.0.113.9, unknown, 10.0.0.7"])
            ),
            ip("10.0.0.7")
        );
        assert_eq!(
            trusted.client(ip("127.0.0.1"), &headers(&["10.0.0.8, 10.0.0.7"])),
            ip("10.0.0.8")
        );
    }

    #[test]
    fn only_a_trusted_proxy_says_https() {
        let trusted = TrustedProxies::parse(["::1"]).unwrap();
        let mut https = HeaderMap::new();
        https.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS, http"));
        assert!(trusted.forwarded_https(ip("::1"), &https));
        assert!(!trusted.forwarded_https(ip("127.0.0.1"), &https));
        assert!(!trusted.forwarded_https(ip("::1"), &HeaderMap::new()));
    }

    #[test]
    fn entries_are_addresses_or_blocks() {
        let parsed =
            TrustedProxies::parse(["127.0.0.1", " fd00::/8 ", "::ffff:10.0.0.0/104"]).unwrap();
        assert_eq!(parsed.to_string(), "127.0.0.1/32, fd00::/8, 10.0.0.0/8");
        assert!(parsed.contains(ip("10.200.0.1")) && parsed.contains(ip("fd12::1")));
        assert!(!parsed.contains(ip("127.0.0.2")) && !parsed.contains(ip("fe80::1")));
        assert!(
            TrustedProxies::parse(["0.0.0.0/0"])
                .unwrap()
                .contains(ip("8.8.8.8"))
        );
        for bad in [
            "localhost",
            "10.0.0.0/33",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "",
        ] {
            let error = TrustedProxies::parse([bad]).unwrap_err().to_string();
            assert!(error.contains(&format!("`{bad}`")), "{error}");
        }
        assert!(
            TrustedProxies::parse(["::/129"])
                .unwrap_err()
                .to_string()
                .contains("at most /128")
        );
    }

    #[test]
    fn an_ipv6_client_is_its_64() {
        assert_eq!(client_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }
}
