//! The crate's one test binary: search against provider stand-ins, and fetches from a page
//! server, every server on 127.0.0.1 and every answer an attacker's.

mod suite;
