//! Egress for sandboxes (SPEC §3): the policy that decides a host by name, and the proxy that
//! enforces it. The sandbox has no network interface but loopback; this proxy, reached through
//! a unix socket bridged inside, is its only way out.
//!
//! Guarantees: a connection goes out only to a host the policy allows, to an address resolved
//! here (not by the sandbox), and never to an address of this machine (any of its interfaces',
//! re-read every second), of its private networks, or of any other special-purpose range, unless
//! a rule names that very address. Limits: it decides by the name the client gives (`CONNECT`
//! host or URL host); it does not look inside TLS, so an allowed host is trusted with whatever
//! is sent to it; and "this machine" is what its interfaces list, so a public address that
//! reaches it only through a NAT in front of it is not known as its own.

mod addresses;
mod policy;
mod proxy;

pub use addresses::{OwnAddresses, Range, Refusal, refusal, this_machine};
pub use policy::{COMMON_DOMAINS, Decision, DomainSet, EgressPolicy};
pub use proxy::{EgressProxy, MAX_CONNECTIONS, ProxyEvent, Resolver, is_internal};
