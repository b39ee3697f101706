//! Which hosts a sandbox may reach, by name (SPEC §3).
//!
//! Domains are kept label-reversed (`com.example` for example.com), as the seed document lists
//! them, in a trie keyed by label: a host matches a domain when the domain's labels are a
//! prefix of the host's reversed labels, so `a.b.example.com` and `example.com` match
//! `com.example` and `example.com.evil.test` does not.

use std::collections::HashMap;

use deft_core::{AllowRule, NetworkLevel};

/// The package registries and tool hosts of the seed document's "Common dependencies",
/// exactly, label-reversed as the seed writes them. Each allows the domain and its subdomains.
pub const COMMON_DOMAINS: &[&str] = &[
    "org.alpinelinux",
    "com.amazonaws",
    "com.anaconda",
    "org.apache",
    "org.llvm.apt",
    "org.archlinux",
    "com.amazon.aws",
    "com.azure",
    "org.bitbucket",
    "io.bower",
    "org.centos",
    "org.cocoapods",
    "io.continuum",
    "org.cpan",
    "io.crates",
    "org.debian",
    "com.docker",
    "io.docker",
    "net.dot",
    "com.microsoft.dotnet",
    "org.eclipse",
    "org.fedoraproject",
    "io.gcr",
    "io.ghcr",
    "com.github",
    "com.githubusercontent",
    "com.gitlab",
    "org.golang",
    "com.google",
    "io.goproxy",
    "org.gradle",
    "com.hashicorp",
    "org.haskell",
    "pm.hex",
    "com.java",
    "net.java",
    "com.bintray.jcenter",
    "org.json-schema",
    "org.schemastore.json",
    "io.k8s",
    "net.launchpad",
    "org.maven",
    "com.microsoft.mcr",
    "org.metacpan",
    "com.microsoft",
    "org.nodejs",
    "com.npmjs",
    "org.npmjs",
    "org.nuget",
    "com.oracle",
    "io.packagecloud",
    "com.microsoft.packages",
    "org.packagist",
    "dev.go.pkg",
    "net.launchpad.ppa",
    "dev.pub",
    "io.pypa",
    "org.pypi",
    "org.python.pypi",
    "org.pythonhosted",
    "io.quay",
    "org.ruby-lang",
    "org.rubyforge",
    "org.rubygems",
    "org.rubyonrails",
    "rs.rustup",
    "io.rvm",
    "net.sourceforge",
    "io.spring",
    "org.swift",
    "com.ubuntu",
    "com.visualstudio",
    "com.yarnpkg",
];

/// A set of domains, each matching itself and its subdomains.
#[derive(Debug, Clone, Default)]
pub struct DomainSet {
    root: Node,
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// A domain of the set ends here.
    terminal: bool,
    children: HashMap<String, Node>,
}

impl DomainSet {
    /// From label-reversed names (`com.example`).
    pub fn from_reversed(domains: &[&str]) -> DomainSet {
        let mut set = DomainSet::default();
        for domain in domains {
            set.insert_reversed(domain);
        }
        set
    }

    pub fn insert_reversed(&mut self, reversed: &str) {
        let mut node = &mut self.root;
        for label in reversed.split('.') {
            node = node.children.entry(label.to_ascii_lowercase()).or_default();
        }
        node.terminal = true;
    }

    /// The matching domain, label-reversed, when `host` is one of the set's domains or under one.
    pub fn matching(&self, host: &str) -> Option<String> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let mut node = &self.root;
        let mut path: Vec<&str> = Vec::new();
        for label in host.rsplit('.') {
            node = node.children.get(label)?;
            path.push(label);
            if node.terminal {
                return Some(path.join("."));
            }
        }
        None
    }
}

/// The task's network level and allow-list, with the forge's own hosts.
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    pub level: NetworkLevel,
    pub allow: Vec<AllowRule>,
    /// What `connections` reaches: the forge's hosts (none for the local forge).
    pub forge: DomainSet,
    common: DomainSet,
}

/// Why a host is allowed or not, for the task's event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The rule that decided: `open`, `custom .example.com`, `common io.crates`, `forge …`, or
    /// why nothing matched.
    pub rule: String,
    /// The host is named by a rule of its own (a custom host or IP). When the host is an IP
    /// address, this is what lets a connection go to it though it is refused otherwise (this
    /// machine's, private, loopback, ...); a named host name gets no such exception.
    pub named: bool,
}

impl EgressPolicy {
    pub fn new(level: NetworkLevel, allow: Vec<AllowRule>, forge: DomainSet) -> EgressPolicy {
        EgressPolicy {
            level,
            allow,
            forge,
            common: DomainSet::from_reversed(COMMON_DOMAINS),
        }
    }

    pub fn decide(&self, host: &str) -> Decision {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let allowed = |rule: String, named: bool| Decision {
            allowed: true,
            rule,
            named,
        };
        if let Some(domain) = self.forge.matching(&host) {
            return allowed(format!("forge {domain}"), false);
        }
        match self.level {
            NetworkLevel::Open => return allowed("open".into(), false),
            NetworkLevel::Common => {
                if let Some(domain) = self.common.matching(&host) {
                    return allowed(format!("common {domain}"), false);
                }
            }
            NetworkLevel::Custom => {
                if let Some(rule) = self.allow.iter().find(|rule| rule.matches(&host)) {
                    return allowed(format!("custom {rule}"), matches!(rule, AllowRule::Host(_)));
                }
            }
            NetworkLevel::Connections => {}
        }
        Decision {
            allowed: false,
            rule: format!(
                "no rule of the `{}` level allows {host}",
                self.level.as_str()
            ),
            named: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(level: NetworkLevel, allow: &[&str]) -> EgressPolicy {
        let allow = allow
            .iter()
            .map(|a| AllowRule::parse(a, "allow").unwrap())
            .collect();
        EgressPolicy::new(level, allow, DomainSet::default())
    }

    #[test]
    fn domains_match_themselves_and_their_subdomains_only() {
        let set = DomainSet::from_reversed(&["com.example", "io.crates"]);
        assert_eq!(set.matching("example.com").as_deref(), Some("com.example"));
        assert_eq!(
            set.matching("a.b.example.com").as_deref(),
            Some("com.example")
        );
        assert_eq!(
            set.matching("Static.Crates.IO.").as_deref(),
            Some("io.crates")
        );
        assert_eq!(set.matching("example.com.evil.test"), None);
        assert_eq!(set.matching("notexample.com"), None);
        assert_eq!(set.matching("com"), None);
    }

    #[test]
    fn each_level_allows_what_the_spec_says() {
        let custom = policy(NetworkLevel::Custom, &[".example.com", "api.other.net"]);
        assert!(custom.decide("a.b.example.com").allowed);
        assert!(custom.decide("example.com").allowed);
        assert!(!custom.decide("example.com.evil.test").allowed);
        assert!(custom.decide("api.other.net").named);
        assert!(!custom.decide("www.other.net").allowed);
        let common = policy(NetworkLevel::Common, &[]);
        // A registry's index host, assembled from its labels as the list keeps them.
        let index = ["io", "crates", "index"]
            .iter()
            .rev()
            .copied()
            .collect::<Vec<_>>()
            .join(".");
        assert_eq!(common.decide(&index).rule, "common io.crates");
        assert!(!common.decide("example.com").allowed);
        assert!(
            policy(NetworkLevel::Open, &[])
                .decide("anything.test")
                .allowed
        );
        let connections = policy(NetworkLevel::Connections, &[]);
        assert_eq!(
            connections.decide("example.com").rule,
            "no rule of the `connections` level allows example.com"
        );
        let mut forge = DomainSet::default();
        forge.insert_reversed("com.github");
        let github = EgressPolicy::new(NetworkLevel::Connections, vec![], forge);
        assert!(github.decide("api.github.com").allowed);
    }

    #[test]
    fn the_common_list_is_the_seed_documents() {
        // The list as the product documentation gives it, kept in the repository.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/common-dependencies.txt");
        let listed = std::fs::read_to_string(&path).unwrap();
        let listed: Vec<&str> = listed
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(listed, COMMON_DOMAINS);
    }
}
