//! The egress proxy: an HTTP forward proxy (`CONNECT` for TLS, absolute-form requests for plain
//! HTTP) on a unix socket that is bridged into the sandbox, the sandbox's only way out.
//!
//! Each connection is decided by host name against the task's [`EgressPolicy`], then the name is
//! resolved here and the connection is made to the address resolved, so a name cannot be
//! re-pointed between the check and the connect (DNS rebinding). Addresses that reach this
//! machine or its networks (any address of its interfaces, loopback, private, link-local with
//! cloud metadata, every other special-purpose range: `addresses.rs`) are refused
//! unless a rule names that very address. Every decision is reported as a [`ProxyEvent`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::addresses;
use crate::policy::EgressPolicy;

/// One decision of the proxy, for the task's event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyEvent {
    pub host: String,
    pub port: u16,
    pub allowed: bool,
    /// The rule that allowed it, or why it was refused.
    pub rule: String,
}

/// How the proxy turns names into addresses.
#[derive(Debug, Clone, Default)]
pub enum Resolver {
    /// The host's resolver.
    #[default]
    System,
    /// Fixed answers, for tests that must not send a DNS query anywhere.
    Fixed(std::collections::HashMap<String, Vec<IpAddr>>),
}

impl Resolver {
    async fn lookup(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        match self {
            Resolver::System => Ok(tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::lookup_host((host, port)),
            )
            .await
            .map_err(|_| format!("resolving {host} took too long"))?
            .map_err(|error| format!("cannot resolve {host}: {error}"))?
            .collect()),
            Resolver::Fixed(answers) => answers
                .get(host)
                .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
                .ok_or_else(|| format!("cannot resolve {host}: no such name")),
        }
    }
}

/// The largest request head read before deciding.
const MAX_HEAD: usize = 16 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A running proxy; it stops, and removes its socket, when dropped.
#[derive(Debug)]
pub struct EgressProxy {
    path: PathBuf,
    stop: CancellationToken,
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Connections one sandbox may have open through its proxy at once (package managers open a
/// few dozen at most).
pub const MAX_CONNECTIONS: usize = 128;

/// The most bytes of a unix socket's path that `bind` takes (`sun_path`, with its NUL).
const SUN_PATH_MAX: usize = 107;

/// Binds a unix socket at `path`. A path longer than `sun_path` holds (a data dir a few
/// folders deep) is bound through its directory's descriptor, as `/proc/self/fd/N/NAME`:
/// the socket lands at the same place, whatever the depth.
pub fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if path.as_os_str().as_bytes().len() <= SUN_PATH_MAX {
        return UnixListener::bind(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no socket file in a directory", path.display()),
        ));
    };
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_path())
        .open(dir)?;
    use std::os::fd::AsRawFd as _;
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    UnixListener::bind(short)
}

/// `O_PATH | O_DIRECTORY`: the directory is only named through, never read.
fn libc_o_path() -> i32 {
    (rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY).bits() as i32
}

impl EgressProxy {
    /// Listens on a unix socket at `path` (of any length) and decides every connection with
    /// `policy`.
    pub fn start(
        path: &Path,
        policy: EgressPolicy,
        events: mpsc::UnboundedSender<ProxyEvent>,
    ) -> std::io::Result<EgressProxy> {
        EgressProxy::start_with(path, policy, events, Resolver::System)
    }

    /// [`EgressProxy::start`] with a resolver of the caller's.
    pub fn start_with(
        path: &Path,
        policy: EgressPolicy,
        events: mpsc::UnboundedSender<ProxyEvent>,
        resolver: Resolver,
    ) -> std::io::Result<EgressProxy> {
        let listener = bind_unix(path)?;
        let stop = CancellationToken::new();
        let accept_stop = stop.clone();
        // Each connection costs deft two descriptors: one sandbox holding thousands open would
        // use up deft's, and every other task with them.
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = accept_stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                // Past the limit a connection is closed at once: the client sees it end.
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    drop(client);
                    continue;
                };
                let policy = policy.clone();
                let events = events.clone();
                let resolver = resolver.clone();
                let stop = accept_stop.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = serve(client, &policy, &resolver, &events) => {}
                    }
                });
            }
        });
        Ok(EgressProxy {
            path: path.to_owned(),
            stop,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What the client asked for.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// `CONNECT host:port`: a tunnel.
    Tunnel { host: String, port: u16 },
    /// `GET http://host:port/path`: one plain HTTP request, with the head rewritten.
    Forward {
        host: String,
        port: u16,
        head: Vec<u8>,
    },
}

async fn serve(
    mut client: UnixStream,
    policy: &EgressPolicy,
    resolver: &Resolver,
    events: &mpsc::UnboundedSender<ProxyEvent>,
) {
    let (head, rest) = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
        Ok(Ok(read)) => read,
        _ => return,
    };
    let target = match parse(&head) {
        Ok(target) => target,
        Err(why) => {
            let _ = refuse(&mut client, 400, &why).await;
            return;
        }
    };
    let (host, port) = match &target {
        Target::Tunnel { host, port } | Target::Forward { host, port, .. } => (host.clone(), *port),
    };
    let decision = policy.decide(&host);
    let report = |allowed: bool, rule: String| {
        let _ = events.send(ProxyEvent {
            host: host.clone(),
            port,
            allowed,
            rule,
        });
    };
    if !decision.allowed {
        report(false, decision.rule.clone());
        let _ = refuse(
            &mut client,
            403,
            &format!(
                "deft egress: {host}:{port} is not allowed ({})",
                decision.rule
            ),
        )
        .await;
        return;
    }
    let address = match resolve(resolver, &host, port, decision.named).await {
        Ok(address) => address,
        Err(why) => {
            report(false, why.clone());
            let _ = refuse(
                &mut client,
                403,
                &format!("deft egress: {host}:{port} refused: {why}"),
            )
            .await;
            return;
        }
    };
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(error)) => {
            report(true, decision.rule.clone());
            let _ = refuse(
                &mut client,
                502,
                &format!("deft egress: cannot connect to {host}:{port}: {error}"),
            )
            .await;
            return;
        }
        Err(_) => {
            report(true, decision.rule.clone());
            let _ = refuse(
                &mut client,
                504,
                &format!("deft egress: {host}:{port} did not answer"),
            )
            .await;
            return;
        }
    };
    report(true, decision.rule);
    let mut upstream = upstream;
    match target {
        Target::Tunnel { .. } => {
            if client
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            if !rest.is_empty() && upstream.write_all(&rest).await.is_err() {
                return;
            }
        }
        Target::Forward { head, .. } => {
            if upstream.write_all(&head).await.is_err() || upstream.write_all(&rest).await.is_err()
            {
                return;
            }
        }
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// Reads up to the end of the request head; returns the head and any bytes read past it.
async fn read_head(client: &mut UnixStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let read = client.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buffer.split_off(end + 4);
            return Ok((buffer, rest));
        }
        if buffer.len() > MAX_HEAD {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

fn parse(head: &[u8]) -> Result<Target, String> {
    let text = std::str::from_utf8(head).map_err(|_| "the request head is not UTF-8".to_owned())?;
    // Lines end in CRLF only: a bare LF would let a server that accepts it read a header (or
    // a second request) the proxy did not see.
    if text.replace("\r\n", "").contains(['\n', '\r']) {
        return Err("a request head's lines end in CRLF only".into());
    }
    let mut lines = text.split("\r\n");
    let request = lines.next().unwrap_or("");
    let mut parts = request.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("not an HTTP request".into());
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || parts.next().is_some() {
        return Err("not an HTTP/1.x request line".into());
    }
    if method == "CONNECT" {
        let (host, port) = split_authority(target, None)?;
        return Ok(Target::Tunnel { host, port });
    }
    let rest = target.strip_prefix("http://").ok_or_else(|| {
        "only http:// URLs are forwarded; use CONNECT (an https:// URL through the proxy) for TLS".to_owned()
    })?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let (host, port) = split_authority(authority, Some(80))?;
    // The Host the server sees is the one the policy decided on: a different one would reach
    // another site of the same address (a CDN's).
    let shown = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_ascii_lowercase()
    };
    let shown = if port == 80 {
        shown
    } else {
        format!("{shown}:{port}")
    };
    let mut rewritten = format!("{method} {path} {version}\r\nHost: {shown}\r\n");
    for line in lines.filter(|line| !line.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "host" | "proxy-connection" | "proxy-authorization" | "connection" | "keep-alive"
        ) {
            continue;
        }
        rewritten.push_str(line);
        rewritten.push_str("\r\n");
    }
    // One request per connection: the next one is decided afresh.
    rewritten.push_str("Connection: close\r\n\r\n");
    Ok(Target::Forward {
        host,
        port,
        head: rewritten.into_bytes(),
    })
}

fn split_authority(authority: &str, default_port: Option<u16>) -> Result<(String, u16), String> {
    if authority.contains('@') {
        return Err("credentials in the URL are not forwarded".into());
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address without its `]`")?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match (port, default_port) {
        (Some(port), _) => port
            .parse::<u16>()
            .map_err(|_| format!("`{port}` is not a port"))?,
        (None, Some(default)) => default,
        (None, None) => return Err("CONNECT needs host:port".into()),
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    Ok((host.to_ascii_lowercase(), port))
}

/// Resolves `host` and picks an address it may reach.
async fn resolve(
    resolver: &Resolver,
    host: &str,
    port: u16,
    named: bool,
) -> Result<SocketAddr, String> {
    let literal = host.parse::<IpAddr>().ok();
    let addresses: Vec<SocketAddr> = match literal {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => resolver.lookup(host, port).await?,
    };
    // A rule naming this very address is the person's own word that it may be reached. A rule
    // naming a host name is not: whoever runs that name's DNS decides where it points.
    if let Some(ip) = literal
        && named
    {
        return Ok(SocketAddr::new(ip, port));
    }
    let own = addresses::this_machine()
        .map_err(|error| format!("{error}; {host} is refused rather than risk reaching it"))?;
    let mut refused = Vec::new();
    for address in &addresses {
        match addresses::refusal(address.ip(), &own) {
            None => return Ok(*address),
            Some(refusal) => refused.push(refusal),
        }
    }
    let Some(first) = refused.first() else {
        return Err(format!("{host} has no address"));
    };
    let hint = format!(
        "only a `custom` allow rule naming the address {} itself lets it through",
        first.ip()
    );
    Err(match (literal, refused.len()) {
        (Some(_), _) => format!("{first}; {hint}"),
        (None, 1) => format!(
            "{host} resolves to {}, which {}; {hint}",
            first.ip(),
            first.reason()
        ),
        (None, count) => format!(
            "{host} resolves to {}, which {}, and to {} more address(es), all refused too; {hint}",
            first.ip(),
            first.reason(),
            count - 1
        ),
    })
}

/// Whether the proxy refuses `ip` to a host no rule names by that address: an address of this
/// machine (as its interfaces are now) or of a special-purpose range, alone or inside IPv6.
/// When this machine's addresses cannot be read, everything is refused.
pub fn is_internal(ip: IpAddr) -> bool {
    addresses::this_machine().map_or(true, |own| addresses::refusal(ip, &own).is_some())
}

async fn refuse(client: &mut UnixStream, status: u16, message: &str) -> std::io::Result<()> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        502 => "Bad Gateway",
        _ => "Gateway Timeout",
    };
    let body = format!("{message}\n");
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(answer.as_bytes()).await?;
    client.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_socket_binds_at_a_path_longer_than_sun_path() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(90)).join("e".repeat(90));
        std::fs::create_dir_all(&deep).unwrap();
        let path = deep.join("proxy.sock");
        assert!(path.as_os_str().len() > 200);
        let listener = bind_unix(&path).unwrap();
        use std::os::unix::fs::FileTypeExt as _;
        assert!(
            std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_socket()
        );
        // Reached through a short name for the same directory.
        let short = dir.path().join("s");
        std::os::unix::fs::symlink(&deep, &short).unwrap();
        let (client, accepted) = tokio::join!(
            tokio::net::UnixStream::connect(short.join("proxy.sock")),
            listener.accept()
        );
        client.unwrap();
        accepted.unwrap();
    }

    #[test]
    fn requests_are_parsed_and_rewritten() {
        assert_eq!(
            parse(b"CONNECT registry.example.org:443 HTTP/1.1\r\nHost: registry.example.org:443\r\n\r\n")
                .unwrap(),
            Target::Tunnel {
                host: "registry.example.org".into(),
                port: 443
            }
        );
        assert_eq!(
            parse(b"CONNECT [::1]:8443 HTTP/1.1\r\n\r\n").unwrap(),
            Target::Tunnel {
                host: "::1".into(),
                port: 8443
            }
        );
        let Target::Forward { host, port, head } =
            parse(b"GET http://Example.com/a?b=1 HTTP/1.1\r\nHost: other.example.net\r\nProxy-Connection: keep-alive\r\n\r\n").unwrap()
        else {
            panic!("a forward")
        };
        assert_eq!((host.as_str(), port), ("example.com", 80));
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
        );
        assert!(
            parse(b"GET https://example.com/ HTTP/1.1\r\n\r\n")
                .unwrap_err()
                .contains("use CONNECT")
        );
        assert!(parse(b"CONNECT example.com HTTP/1.1\r\n\r\n").is_err());
        // A bare LF, or a version that is not HTTP/1.x, could hide a header or a request.
        assert!(parse(b"GET http://example.com/ HTTP/1.1\nHost: other.test\r\n\r\n").is_err());
        assert!(parse(b"GET http://example.com/ HTTP/1.1 extra\r\n\r\n").is_err());
        assert!(parse(b"GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn only_a_rule_naming_the_address_itself_reaches_a_refused_one() {
        let resolver = Resolver::Fixed(std::collections::HashMap::from([
            ("db.test".to_owned(), vec!["10.0.0.5".parse().unwrap()]),
            (
                "mixed.test".to_owned(),
                vec!["127.0.0.1".parse().unwrap(), "8.8.8.8".parse().unwrap()],
            ),
            (
                "docs.test".to_owned(),
                vec![
                    "192.0.2.7".parse().unwrap(),
                    "::ffff:127.0.0.1".parse().unwrap(),
                ],
            ),
        ]));
        // A host name named by a rule: its DNS is not the person's word, so it is judged.
        assert_eq!(
            resolve(&resolver, "db.test", 5432, true).await.unwrap_err(),
            "db.test resolves to 10.0.0.5, which is in 10.0.0.0/8 (private); only a `custom` \
             allow rule naming the address 10.0.0.5 itself lets it through"
        );
        // The address itself, named by a rule.
        assert_eq!(
            resolve(&resolver, "10.0.0.5", 5432, true).await.unwrap(),
            "10.0.0.5:5432".parse().unwrap()
        );
        assert_eq!(
            resolve(&resolver, "192.0.2.7", 443, false)
                .await
                .unwrap_err(),
            "192.0.2.7 is in 192.0.2.0/24 (documentation, TEST-NET-1); only a `custom` allow \
             rule naming the address 192.0.2.7 itself lets it through"
        );
        assert_eq!(
            resolve(&resolver, "mixed.test", 443, false).await.unwrap(),
            "8.8.8.8:443".parse().unwrap()
        );
        let both = resolve(&resolver, "docs.test", 443, false)
            .await
            .unwrap_err();
        assert!(
            both.starts_with("docs.test resolves to 192.0.2.7, which is in 192.0.2.0/24")
                && both.contains("and to 1 more address(es), all refused too"),
            "{both}"
        );
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.100.100.200",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(
                is_internal(internal.parse().unwrap()),
                "{internal} is internal"
            );
        }
        for external in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:2800:220:1:248:1893:25c8:1946",
        ] {
            assert!(
                !is_internal(external.parse().unwrap()),
                "{external} is not internal"
            );
        }
    }
}
