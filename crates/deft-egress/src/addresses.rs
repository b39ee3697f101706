//! The addresses the egress proxy never connects to unless a rule names them, and why.
//!
//! A fixed list of private ranges is not enough: this machine answers on every address of its
//! own interfaces (a public one, or one in a range nobody thought to list) as surely as on
//! 127.0.0.1, and IPv6 has several ways to carry an IPv4 address that the kernel or a
//! translator in the path turns back into that IPv4 address. So an address is refused when it
//! is one of this machine's (read from its interfaces, kept fresh), when it falls in any range of
//! the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and its updates, with
//! multicast and the deprecated IPv6 forms), when an IPv6 address lies outside the space given
//! out for global unicast, or when the IPv4 address an IPv6 address carries would be refused.
//! Each refusal names what refused it, since the user reads it in the task's network events.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A block of addresses with what it is set aside for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    first: IpAddr,
    prefix: u8,
    purpose: &'static str,
}

impl Range {
    /// A range in CIDR notation (`192.168.0.0/16`), from one of the tables below, which a
    /// test reads whole: a bad entry fails it, never a connection.
    fn parse(cidr: &str, purpose: &'static str) -> Range {
        let (first, prefix) = cidr
            .split_once('/')
            .expect("a table entry has a prefix length");
        Range {
            first: first.parse().expect("a table entry's address parses"),
            prefix: prefix
                .parse()
                .expect("a table entry's prefix length parses"),
            purpose,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.first, ip) {
            (IpAddr::V4(first), IpAddr::V4(ip)) => {
                (first.to_bits() ^ ip.to_bits())
                    .checked_shr(32 - u32::from(self.prefix))
                    .unwrap_or(0)
                    == 0
            }
            (IpAddr::V6(first), IpAddr::V6(ip)) => {
                (first.to_bits() ^ ip.to_bits())
                    .checked_shr(128 - u32::from(self.prefix))
                    .unwrap_or(0)
                    == 0
            }
            _ => false,
        }
    }

    pub fn purpose(&self) -> &'static str {
        self.purpose
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ({})", self.first, self.prefix, self.purpose)
    }
}

/// The IANA IPv4 Special-Purpose Address Registry, with multicast (a registry of its own).
/// Globally reachable entries (AS112, AMT) are here too: a task has no business with them, and
/// a list that refuses every entry needs no judgement kept up to date. Each entry is a range in
/// CIDR notation, as the registry writes it, with its purpose.
const SPECIAL_V4: &[(&str, &str)] = &[
    ("0.0.0.0/32", "unspecified: reaches this machine"),
    ("0.0.0.0/8", "\"this network\""),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space, carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local, where cloud metadata answers"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation, TEST-NET-1"),
    ("192.31.196.0/24", "AS112-v4"),
    ("192.52.193.0/24", "AMT"),
    ("192.88.99.0/24", "deprecated 6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("192.175.48.0/24", "AS112 direct delegation"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation, TEST-NET-2"),
    ("203.0.113.0/24", "documentation, TEST-NET-3"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "limited broadcast"),
];

/// The IANA IPv6 Special-Purpose Address Registry, with the deprecated forms that still mean
/// something to a stack (IPv4-compatible, IPv4-translated, site-local) and multicast.
const SPECIAL_V6: &[(&str, &str)] = &[
    ("::/128", "unspecified: reaches this machine"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible, deprecated"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("::ffff:0:0:0/96", "IPv4-translated"),
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("100:0:0:1::/64", "dummy prefix"),
    ("2001::/23", "IETF protocol assignments"),
    ("2001::/32", "Teredo"),
    ("2001:2::/48", "benchmarking"),
    ("2001:3::/32", "AMT"),
    ("2001:4:112::/48", "AS112-v6"),
    ("2001:10::/28", "ORCHID, deprecated"),
    ("2001:20::/28", "ORCHIDv2"),
    ("2001:30::/28", "drone remote ID"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("2620:4f:8000::/48", "AS112 direct delegation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing SIDs"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local, deprecated"),
    ("ff00::/8", "multicast"),
];

/// All IPv6 global unicast is given out from here; anything else is reserved, and a stack or a
/// future standard may give it a meaning that reaches somewhere it should not.
static GLOBAL_UNICAST: LazyLock<Range> =
    LazyLock::new(|| Range::parse("2000::/3", "global unicast"));

/// The tables above as ranges, parsed once.
static RANGES_V4: LazyLock<Vec<Range>> = LazyLock::new(|| parsed(SPECIAL_V4));
static RANGES_V6: LazyLock<Vec<Range>> = LazyLock::new(|| parsed(SPECIAL_V6));

fn parsed(table: &[(&str, &'static str)]) -> Vec<Range> {
    table
        .iter()
        .map(|&(cidr, purpose)| Range::parse(cidr, purpose))
        .collect()
}

/// The most specific special-purpose range holding `ip`, so the reason is the precise one
/// (Teredo, not the IETF block around it).
pub fn special_range(ip: IpAddr) -> Option<Range> {
    let table = match ip {
        IpAddr::V4(_) => &RANGES_V4,
        IpAddr::V6(_) => &RANGES_V6,
    };
    table
        .iter()
        .filter(|range| range.contains(ip))
        .max_by_key(|range| range.prefix)
        .copied()
}

/// Why the proxy will not connect to an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// One of this machine's own addresses, on the named interface.
    ThisMachine { ip: IpAddr, interface: String },
    /// In a special-purpose range.
    Special { ip: IpAddr, range: Range },
    /// An IPv6 address outside 2000::/3 that no special range names.
    NotGlobalUnicast { ip: Ipv6Addr },
    /// An IPv6 address whose IPv4 address, carried the way `form` says, is refused.
    Carries {
        ip: Ipv6Addr,
        form: &'static str,
        inner: Box<Refusal>,
    },
}

impl Refusal {
    pub fn ip(&self) -> IpAddr {
        match self {
            Refusal::ThisMachine { ip, .. } | Refusal::Special { ip, .. } => *ip,
            Refusal::NotGlobalUnicast { ip } | Refusal::Carries { ip, .. } => IpAddr::V6(*ip),
        }
    }

    /// What is wrong with the address, as a phrase that follows it ("is in ...").
    pub fn reason(&self) -> String {
        match self {
            Refusal::ThisMachine { interface, .. } => {
                format!("is an address of this machine ({interface})")
            }
            Refusal::Special { range, .. } => format!("is in {range}"),
            Refusal::NotGlobalUnicast { .. } => format!(
                "is outside {}/{}, the only IPv6 space given out for global unicast",
                GLOBAL_UNICAST.first, GLOBAL_UNICAST.prefix
            ),
            Refusal::Carries { form, inner, .. } => {
                format!("carries {} ({form}), which {}", inner.ip(), inner.reason())
            }
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.ip(), self.reason())
    }
}

/// Why `ip` may not be reached when no rule names it, or `None` when it may; `own` is this
/// machine's addresses.
pub fn refusal(ip: IpAddr, own: &OwnAddresses) -> Option<Refusal> {
    if let Some(interface) = own.interface_of(ip) {
        return Some(Refusal::ThisMachine {
            ip,
            interface: interface.to_owned(),
        });
    }
    let v6 = match ip {
        IpAddr::V4(_) => return special_range(ip).map(|range| Refusal::Special { ip, range }),
        IpAddr::V6(v6) => v6,
    };
    // The carried IPv4 address first: its reason (loopback, this machine, ...) says more than
    // the IPv6 form's, and it keeps holding should a form itself ever be let through.
    for (form, carried) in carried_v4(v6) {
        if let Some(inner) = refusal(IpAddr::V4(carried), own) {
            return Some(Refusal::Carries {
                ip: v6,
                form,
                inner: Box::new(inner),
            });
        }
    }
    if let Some(range) = special_range(ip) {
        return Some(Refusal::Special { ip, range });
    }
    (!GLOBAL_UNICAST.contains(ip)).then_some(Refusal::NotGlobalUnicast { ip: v6 })
}

/// The IPv4 addresses an IPv6 address may stand for, each with the form that carries it.
fn carried_v4(ip: Ipv6Addr) -> Vec<(&'static str, Ipv4Addr)> {
    let bytes = ip.octets();
    let s = ip.segments();
    let at = |i: [usize; 4]| Ipv4Addr::new(bytes[i[0]], bytes[i[1]], bytes[i[2]], bytes[i[3]]);
    let last = at([12, 13, 14, 15]);
    let mut carried = Vec::new();
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => carried.push(("IPv4-mapped", last)),
        [0, 0, 0, 0, 0xffff, 0, _, _] => carried.push(("IPv4-translated", last)),
        // `::` and `::1` are the unspecified and loopback addresses, not IPv4 0.0.0.0/0.0.0.1.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => {}
        [0, 0, 0, 0, 0, 0, _, _] => carried.push(("IPv4-compatible", last)),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => carried.push(("NAT64", last)),
        // RFC 6052: a local-use prefix may be /48, /56, /64 or /96 long, with octet 8 left
        // zero and zeros after the IPv4 address. The length is the network's choice, so every
        // placement is judged; those whose zeros are in place come first, for the reason.
        [0x64, 0xff9b, 1, ..] => {
            let zero = |from: usize| bytes[from..].iter().all(|byte| *byte == 0);
            let mut placements = [
                (
                    zero(11) && bytes[8] == 0,
                    "local-use NAT64 /48",
                    at([6, 7, 9, 10]),
                ),
                (
                    zero(12) && bytes[8] == 0,
                    "local-use NAT64 /56",
                    at([7, 9, 10, 11]),
                ),
                (
                    zero(13) && bytes[8] == 0,
                    "local-use NAT64 /64",
                    at([9, 10, 11, 12]),
                ),
                (true, "local-use NAT64 /96", last),
            ];
            placements.sort_by_key(|(well_formed, _, _)| !well_formed);
            carried.extend(placements.map(|(_, form, ip)| (form, ip)));
        }
        [0x2002, ..] => carried.push(("6to4", at([2, 3, 4, 5]))),
        [0x2001, 0, ..] => {
            carried.push(("Teredo server", at([4, 5, 6, 7])));
            // The client's address is stored inverted, so it survives NATs that rewrite it.
            carried.push(("Teredo client", Ipv4Addr::from_bits(!last.to_bits())));
        }
        _ => {}
    }
    carried
}

/// This machine's addresses at one moment, each with the interface that has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnAddresses {
    addresses: Vec<(IpAddr, String)>,
}

impl OwnAddresses {
    /// Reads every interface's addresses (`getifaddrs`), link-local ones included.
    pub fn read() -> std::io::Result<OwnAddresses> {
        let addresses = if_addrs::get_if_addrs()?
            .into_iter()
            .map(|interface| (interface.ip(), interface.name))
            .collect();
        Ok(OwnAddresses { addresses })
    }

    pub fn new(addresses: impl IntoIterator<Item = (IpAddr, String)>) -> OwnAddresses {
        OwnAddresses {
            addresses: addresses.into_iter().collect(),
        }
    }

    pub fn interface_of(&self, ip: IpAddr) -> Option<&str> {
        self.addresses
            .iter()
            .find(|(own, _)| *own == ip)
            .map(|(_, interface)| interface.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = &(IpAddr, String)> {
        self.addresses.iter()
    }
}

/// How old a reading of the interfaces may be when a connection is decided: an address added
/// to an interface is refused within this long, and a burst of connections reads them once.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// The last reading of this machine's addresses, shared by every proxy of the process.
#[derive(Debug, Default)]
pub struct Readings {
    last: Mutex<Option<(Instant, Arc<OwnAddresses>)>>,
}

impl Readings {
    pub const fn new() -> Readings {
        Readings {
            last: Mutex::new(None),
        }
    }

    /// The addresses as of `now`, read with `read` when the last reading is too old. A failed
    /// reading is an error, never an empty list: not knowing this machine's addresses must not
    /// let a connection reach one of them.
    pub fn at(
        &self,
        now: Instant,
        read: impl FnOnce() -> std::io::Result<OwnAddresses>,
    ) -> Result<Arc<OwnAddresses>, String> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((read_at, addresses)) = &*last
            && now.saturating_duration_since(*read_at) < FRESH_FOR
        {
            return Ok(addresses.clone());
        }
        let addresses = Arc::new(read().map_err(|error| {
            format!("cannot read this machine's network addresses to check against: {error}")
        })?);
        *last = Some((now, addresses.clone()));
        Ok(addresses)
    }
}

static THIS_MACHINE: Readings = Readings::new();

/// This machine's addresses, read at most [`FRESH_FOR`] ago.
pub fn this_machine() -> Result<Arc<OwnAddresses>, String> {
    THIS_MACHINE.at(Instant::now(), OwnAddresses::read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn judged(text: &str, own: &OwnAddresses) -> Option<String> {
        refusal(ip(text), own).map(|refusal| refusal.to_string())
    }

    #[test]
    fn every_table_entry_is_a_network_at_its_first_address() {
        for range in RANGES_V4.iter().chain(RANGES_V6.iter()) {
            let width = if range.first.is_ipv4() { 32 } else { 128 };
            assert!(range.prefix <= width, "{range}");
            let first = match range.first {
                IpAddr::V4(ip) => u128::from(ip.to_bits()),
                IpAddr::V6(ip) => ip.to_bits(),
            };
            let host_bits = u32::from(width - range.prefix);
            assert_eq!(
                first.checked_shl(128 - host_bits).unwrap_or(0),
                0,
                "{range}"
            );
        }
    }

    #[test]
    fn every_ipv4_special_purpose_range_is_refused_and_named() {
        let none = OwnAddresses::default();
        for (address, range) in [
            ("0.0.0.0", "0.0.0.0/32 (unspecified: reaches this machine)"),
            ("0.1.2.3", "0.0.0.0/8 (\"this network\")"),
            ("10.1.2.3", "10.0.0.0/8 (private)"),
            (
                "100.64.0.1",
                "100.64.0.0/10 (shared address space, carrier-grade NAT)",
            ),
            (
                "100.127.255.254",
                "100.64.0.0/10 (shared address space, carrier-grade NAT)",
            ),
            ("127.0.0.1", "127.0.0.0/8 (loopback)"),
            ("127.255.255.254", "127.0.0.0/8 (loopback)"),
            (
                "169.254.169.254",
                "169.254.0.0/16 (link-local, where cloud metadata answers)",
            ),
            ("172.16.0.1", "172.16.0.0/12 (private)"),
            ("172.31.255.254", "172.16.0.0/12 (private)"),
            ("192.0.0.170", "192.0.0.0/24 (IETF protocol assignments)"),
            ("192.0.2.1", "192.0.2.0/24 (documentation, TEST-NET-1)"),
            ("192.31.196.1", "192.31.196.0/24 (AS112-v4)"),
            ("192.52.193.1", "192.52.193.0/24 (AMT)"),
            (
                "192.88.99.1",
                "192.88.99.0/24 (deprecated 6to4 relay anycast)",
            ),
            ("192.168.1.1", "192.168.0.0/16 (private)"),
            ("192.175.48.1", "192.175.48.0/24 (AS112 direct delegation)"),
            ("198.18.0.1", "198.18.0.0/15 (benchmarking)"),
            ("198.19.255.254", "198.18.0.0/15 (benchmarking)"),
            (
                "198.51.100.7",
                "198.51.100.0/24 (documentation, TEST-NET-2)",
            ),
            ("203.0.113.9", "203.0.113.0/24 (documentation, TEST-NET-3)"),
            ("224.0.0.1", "224.0.0.0/4 (multicast)"),
            ("239.255.255.250", "224.0.0.0/4 (multicast)"),
            ("240.0.0.1", "240.0.0.0/4 (reserved)"),
            ("255.255.255.254", "240.0.0.0/4 (reserved)"),
            ("255.255.255.255", "255.255.255.255/32 (limited broadcast)"),
        ] {
            assert_eq!(
                judged(address, &none).as_deref(),
                Some(format!("{address} is in {range}").as_str()),
                "{address}"
            );
        }
    }

    #[test]
    fn every_ipv6_special_purpose_range_is_refused_and_named() {
        let none = OwnAddresses::default();
        // Where a range carries an IPv4 address, the one carried here is public, so the
        // reason is the IPv6 range's own.
        for (address, range) in [
            ("::", "::/128 (unspecified: reaches this machine)"),
            ("::1", "::1/128 (loopback)"),
            ("::8.8.8.8", "::/96 (IPv4-compatible, deprecated)"),
            ("::ffff:8.8.8.8", "::ffff:0.0.0.0/96 (IPv4-mapped)"),
            ("::ffff:0:8.8.8.8", "::ffff:0:0:0/96 (IPv4-translated)"),
            ("64:ff9b::8.8.8.8", "64:ff9b::/96 (NAT64)"),
            (
                "64:ff9b:1:808:808:808:808:808",
                "64:ff9b:1::/48 (local-use NAT64)",
            ),
            ("100::1", "100::/64 (discard-only)"),
            ("100:0:0:1::1", "100:0:0:1::/64 (dummy prefix)"),
            ("2001:0:808:808::f7f7:f7f7", "2001::/32 (Teredo)"),
            ("2001:1::1", "2001::/23 (IETF protocol assignments)"),
            ("2001:1ff::1", "2001::/23 (IETF protocol assignments)"),
            ("2001:2::1", "2001:2::/48 (benchmarking)"),
            ("2001:3::1", "2001:3::/32 (AMT)"),
            ("2001:4:112::1", "2001:4:112::/48 (AS112-v6)"),
            ("2001:10::1", "2001:10::/28 (ORCHID, deprecated)"),
            ("2001:20::1", "2001:20::/28 (ORCHIDv2)"),
            ("2001:30::1", "2001:30::/28 (drone remote ID)"),
            ("2001:db8::1", "2001:db8::/32 (documentation)"),
            ("2002:808:808::1", "2002::/16 (6to4)"),
            (
                "2620:4f:8000::1",
                "2620:4f:8000::/48 (AS112 direct delegation)",
            ),
            ("3fff::1", "3fff::/20 (documentation)"),
            ("3fff:fff::1", "3fff::/20 (documentation)"),
            ("5f00::1", "5f00::/16 (segment routing SIDs)"),
            ("fc00::1", "fc00::/7 (unique local)"),
            ("fd00:ec2::254", "fc00::/7 (unique local)"),
            ("fe80::1", "fe80::/10 (link-local)"),
            ("febf::1", "fe80::/10 (link-local)"),
            ("fec0::1", "fec0::/10 (site-local, deprecated)"),
            ("ff02::1", "ff00::/8 (multicast)"),
        ] {
            assert_eq!(
                judged(address, &none).as_deref(),
                Some(format!("{} is in {range}", ip(address)).as_str()),
                "{address}"
            );
        }
        for reserved in ["1::1", "4000::1", "e000::1", "::1:0:0:0:1"] {
            assert_eq!(
                judged(reserved, &none),
                Some(format!(
                    "{} is outside 2000::/3, the only IPv6 space given out for global unicast",
                    ip(reserved)
                )),
            );
        }
    }

    #[test]
    fn an_ipv4_address_inside_ipv6_is_judged_as_ipv4() {
        let none = OwnAddresses::default();
        for (address, form, carried, range) in [
            (
                "::ffff:127.0.0.1",
                "IPv4-mapped",
                "127.0.0.1",
                "127.0.0.0/8 (loopback)",
            ),
            (
                "::ffff:0:169.254.169.254",
                "IPv4-translated",
                "169.254.169.254",
                "169.254.0.0/16 (link-local, where cloud metadata answers)",
            ),
            (
                "::10.0.0.1",
                "IPv4-compatible",
                "10.0.0.1",
                "10.0.0.0/8 (private)",
            ),
            (
                "64:ff9b::192.0.2.1",
                "NAT64",
                "192.0.2.1",
                "192.0.2.0/24 (documentation, TEST-NET-1)",
            ),
            // 127.0.0.1 where a /48 local-use prefix puts it: octets 6, 7, 9 and 10.
            (
                "64:ff9b:1:7f00:0:100::",
                "local-use NAT64 /48",
                "127.0.0.1",
                "127.0.0.0/8 (loopback)",
            ),
            (
                "64:ff9b:1::172.16.0.1",
                "local-use NAT64 /96",
                "172.16.0.1",
                "172.16.0.0/12 (private)",
            ),
            (
                "2002:a9fe:a9fe::1",
                "6to4",
                "169.254.169.254",
                "169.254.0.0/16 (link-local, where cloud metadata answers)",
            ),
            (
                "2001:0:7f00:1::",
                "Teredo server",
                "127.0.0.1",
                "127.0.0.0/8 (loopback)",
            ),
            // The client's 127.0.1.1 is stored inverted: 0x80fffefe.
            (
                "2001:0:808:808::80ff:fefe",
                "Teredo client",
                "127.0.1.1",
                "127.0.0.0/8 (loopback)",
            ),
        ] {
            assert_eq!(
                judged(address, &none),
                Some(format!(
                    "{} carries {carried} ({form}), which is in {range}",
                    ip(address)
                )),
                "{address}"
            );
        }
    }

    #[test]
    fn public_addresses_pass_unless_this_machine_has_them() {
        let own = OwnAddresses::new([
            (ip("8.8.4.4"), "eth9".to_owned()),
            (ip("2606:4700:4700::1001"), "eth9".to_owned()),
        ]);
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "2606:2800:220:1:248:1893:25c8:1946",
            // Just outside a refused range, on either side.
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.255",
            "192.0.3.0",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "198.51.101.0",
            "203.0.112.255",
            "203.0.114.0",
            "223.255.255.255",
            "2001:200::1",
            "2001:db7:ffff::1",
            "2001:db9::1",
            "2003::1",
            "2620:4f:8001::1",
            "3fff:1000::1",
        ] {
            assert_eq!(judged(public, &own), None, "{public} is public");
        }
        assert_eq!(
            judged("8.8.4.4", &own).as_deref(),
            Some("8.8.4.4 is an address of this machine (eth9)")
        );
        assert_eq!(
            judged("2606:4700:4700::1001", &own).as_deref(),
            Some("2606:4700:4700::1001 is an address of this machine (eth9)")
        );
        for carrying in ["::ffff:8.8.4.4", "64:ff9b::8.8.4.4", "2002:808:404::1"] {
            assert!(
                judged(carrying, &own)
                    .unwrap()
                    .ends_with("which is an address of this machine (eth9)"),
                "{carrying}"
            );
        }
        // An interface address says which interface, even when a range would refuse it too.
        let documentation = OwnAddresses::new([(ip("192.0.2.2"), "eth0".to_owned())]);
        assert_eq!(
            judged("192.0.2.2", &documentation).as_deref(),
            Some("192.0.2.2 is an address of this machine (eth0)")
        );
    }

    #[test]
    fn the_interfaces_are_read_again_once_the_reading_is_old() {
        let readings = Readings::new();
        let start = Instant::now();
        let first = OwnAddresses::new([(ip("192.0.2.2"), "eth0".to_owned())]);
        let second = OwnAddresses::new([(ip("198.51.100.2"), "eth1".to_owned())]);
        let read = |addresses: &OwnAddresses| {
            let addresses = addresses.clone();
            move || Ok(addresses)
        };
        assert_eq!(*readings.at(start, read(&first)).unwrap(), first);
        // Fresh: not read again.
        let unread = || -> std::io::Result<OwnAddresses> { panic!("read while fresh") };
        assert_eq!(
            *readings
                .at(start + Duration::from_millis(500), unread)
                .unwrap(),
            first
        );
        let later = start + FRESH_FOR + Duration::from_millis(1);
        assert_eq!(*readings.at(later, read(&second)).unwrap(), second);
        // A reading that fails refuses, rather than forgetting this machine's addresses.
        let failing = || Err(std::io::Error::other("no netlink socket"));
        let error = readings.at(later + FRESH_FOR * 2, failing).unwrap_err();
        assert!(error.contains("no netlink socket"), "{error}");
    }

    #[test]
    fn this_machine_has_at_least_its_loopback() {
        let own = this_machine().unwrap();
        assert!(
            own.iter().any(|(ip, _)| ip.is_loopback()),
            "no loopback among {own:?}"
        );
    }
}
