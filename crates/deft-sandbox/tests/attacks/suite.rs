//! The sandbox under attack: each test is something a hostile repository would try, run in a
//! real sandbox, and must fail. The same suite runs against every backend and root: bubblewrap
//! on the host's root (`tests/attacks.rs`) and on an image's (`tests/attacks_image.rs`), and a
//! container on an image's (`deft-container/tests/attacks_container.rs`). The file that
//! includes it says which, with `fn backend()` and `fn root()`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use deft_core::{AllowRule, NetworkLevel};
use deft_egress::{DomainSet, EgressPolicy, ProxyEvent};
use deft_sandbox::{
    Ending, ExecOutcome, ExecRequest, Limits, Sandbox, SandboxBackend, SandboxSpec,
};
use tokio::sync::mpsc;

/// The backend under attack, and what must outlive its sandboxes (a container engine).
pub struct Backend {
    pub backend: Box<dyn SandboxBackend>,
    #[allow(dead_code, reason = "held for its Drop")]
    pub keep: Box<dyn std::any::Any + Send>,
}

struct Fixture {
    // Dropped in this order: the sandbox before its backend's engine.
    sandbox: Box<dyn Sandbox>,
    _backend: Backend,
    events: mpsc::UnboundedReceiver<ProxyEvent>,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn workspace(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    async fn run(&self, script: &str) -> ExecOutcome {
        self.run_with(ExecRequest {
            timeout: Duration::from_secs(30),
            ..ExecRequest::shell(script)
        })
        .await
    }

    async fn run_with(&self, request: ExecRequest) -> ExecOutcome {
        let mut streamed = String::new();
        let outcome = self
            .sandbox
            .exec(&request, &mut |piece| streamed.push_str(piece))
            .await
            .unwrap();
        assert!(
            outcome.truncated || streamed.trim_end() == outcome.output.trim_end(),
            "streamed and kept output agree"
        );
        outcome
    }

    fn events(&mut self) -> Vec<ProxyEvent> {
        let mut events = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            events.push(event);
        }
        events
    }
}

struct Options {
    /// What the proxy resolves names to: no DNS query leaves the test.
    names: std::collections::HashMap<String, Vec<std::net::IpAddr>>,
    level: NetworkLevel,
    allow: Vec<&'static str>,
    secrets: BTreeMap<String, String>,
    limits: Limits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            names: Default::default(),
            level: NetworkLevel::Connections,
            allow: vec![],
            secrets: BTreeMap::new(),
            limits: Limits::default(),
        }
    }
}

async fn sandbox(options: Options) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("workspace");
    std::fs::create_dir(&workspace).unwrap();
    let backend = super::backend().await;
    let allow = options
        .allow
        .iter()
        .map(|a| AllowRule::parse(a, "allow").unwrap())
        .collect();
    let spec = SandboxSpec {
        workspace,
        state_dir: dir.path().join("state"),
        env: BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]),
        secrets: options.secrets,
        network: EgressPolicy::new(options.level, allow, DomainSet::default()),
        resolver: deft_egress::Resolver::Fixed(options.names),
        limits: options.limits,
        root: super::root(),
    };
    let (sender, events) = mpsc::unbounded_channel();
    let sandbox = backend
        .backend
        .create(spec, sender)
        .await
        .expect("the sandbox starts");
    Fixture {
        sandbox,
        _backend: backend,
        events,
        dir,
    }
}

/// Gives `path` and what is under it to the sandbox's user, as deft does with its clones when
/// it runs as root (links themselves, never followed).
fn give_to_sandbox(path: &std::path::Path) {
    if let Some(user) = deft_sandbox::user::sandbox_user().unwrap() {
        let status = std::process::Command::new("chown")
            .args(["-R", "-h", &format!("{}:{}", user.uid, user.gid)])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

#[tokio::test]
async fn a_command_runs_in_the_workspace_with_its_environment() {
    let fixture = sandbox(Options::default()).await;
    let outcome = fixture
        .run("echo $GREETING; pwd; id -u; echo made > file.txt; echo err >&2")
        .await;
    assert_eq!(outcome.ending, Ending::Exited(0), "{}", outcome.output);
    assert_eq!(outcome.output, "hello\n/workspace\n1000\nerr\n");
    assert_eq!(
        std::fs::read_to_string(fixture.workspace().join("file.txt")).unwrap(),
        "made\n"
    );
    let failed = fixture.run("exit 3").await;
    assert_eq!(failed.ending, Ending::Exited(3));
    let missing = fixture
        .run_with(ExecRequest {
            argv: vec!["no-such-program".into()],
            ..ExecRequest::shell("")
        })
        .await;
    assert_eq!(missing.exit_code(), 127, "{}", missing.output);
}

/// A task's processes are never host root: when deft runs as root they run as its dedicated
/// sandbox user, otherwise as deft's own (unprivileged) user. What they create on the host is
/// owned by that user, and their uid inside maps to it.
#[tokio::test]
async fn the_sandbox_never_holds_host_root() {
    use std::os::unix::fs::MetadataExt as _;
    let fixture = sandbox(Options::default()).await;
    let outcome = fixture
        .run("touch made-inside && awk '{print $1, $2, $3}' /proc/self/uid_map")
        .await;
    assert_eq!(outcome.ending, Ending::Exited(0), "{}", outcome.output);
    let owner = std::fs::metadata(fixture.workspace().join("made-inside"))
        .unwrap()
        .uid();
    assert_ne!(owner, 0, "a file the sandbox made is owned by host root");
    assert_eq!(outcome.output.trim(), format!("1000 {owner} 1"));
    if rustix::process::geteuid().is_root() {
        let user = deft_sandbox::user::sandbox_user().unwrap().unwrap();
        assert_eq!(owner, user.uid);
    }
}

/// The kernel's settings and the host's device interfaces under `/proc` are read-only, and the
/// files that read kernel memory or keys are hidden, whatever uid the sandbox maps to: with
/// deft as root, a writable `/proc/sys/kernel/core_pattern` ran a task's program as host root.
/// Checked with `access(W_OK)` and by rewriting a setting's own value, so that the test
/// changes nothing on a host where the protection is missing.
#[tokio::test]
async fn the_kernels_settings_under_proc_cannot_be_written() {
    let fixture = sandbox(Options::default()).await;
    let outcome = fixture
        .run(
            "find /proc/sys /proc/irq /proc/bus /proc/fs /proc/sysrq-trigger -writable 2>/dev/null | head -5; \
             echo ---; \
             cat /proc/sys/kernel/core_pattern > /tmp/pattern; \
             cat /tmp/pattern > /proc/sys/kernel/core_pattern && echo rewrote-core-pattern; \
             echo ---; \
             for f in /proc/kcore /proc/keys /proc/timer_list /proc/kallsyms /proc/slabinfo /proc/vmallocinfo /proc/pagetypeinfo /proc/iomem; do \
               [ -e $f ] && [ \"$(head -c 1 $f 2>/dev/null | wc -c)\" -gt 0 ] && echo readable $f; \
             done; \
             ls -A /proc/acpi 2>/dev/null | head -3; true",
        )
        .await;
    assert_eq!(outcome.ending, Ending::Exited(0), "{}", outcome.output);
    let parts: Vec<&str> = outcome.output.split("---\n").collect();
    assert_eq!(parts[0], "", "writable kernel settings: {}", outcome.output);
    assert!(
        !parts[1].contains("rewrote-core-pattern") && parts[1].contains("Read-only file system"),
        "{}",
        outcome.output
    );
    assert_eq!(parts[2], "", "{}", outcome.output);
}

/// Tools that look the user up (`id`, `whoami`, ssh, pip's user site) find the sandbox's own
/// user, and the host's accounts are not listed inside.
#[tokio::test]
async fn the_sandbox_has_its_own_user_and_no_host_accounts() {
    let fixture = sandbox(Options::default()).await;
    let outcome = fixture
        .run("id; whoami; getent passwd deft; cut -d: -f1 /etc/passwd | tr '\\n' ' '; echo; cut -d: -f1 /etc/group | tr '\\n' ' '")
        .await;
    assert_eq!(outcome.ending, Ending::Exited(0), "{}", outcome.output);
    assert_eq!(
        outcome.output,
        "uid=1000(deft) gid=1000(deft) groups=1000(deft)\ndeft\n\
         deft:x:1000:1000:deft:/home/deft:/bin/bash\nroot deft nobody \nroot deft nogroup "
    );
}

#[tokio::test]
async fn a_long_running_program_talks_over_its_standard_streams_inside_the_sandbox() {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    let mut options = Options::default();
    options
        .secrets
        .insert("SERVER_KEY".into(), "s3cret-for-the-server".into());
    let fixture = sandbox(options).await;
    let script = "while read line; do echo \"got:$line $GREETING $EXTRA $(hostname) $(id -u)\"; echo to-stderr >&2; done";
    let mut process = fixture
        .sandbox
        .spawn(
            &ExecRequest::shell(script),
            &[("EXTRA".to_owned(), "extra".to_owned())],
        )
        .await
        .expect("the program starts");
    let mut lines = tokio::io::BufReader::new(&mut process.stdout).lines();
    for word in ["first", "second"] {
        process
            .stdin
            .write_all(format!("{word}\n").as_bytes())
            .await
            .unwrap();
        process.stdin.flush().await.unwrap();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("an answer")
            .unwrap()
            .unwrap();
        // Its own environment, the sandbox's, and still the sandbox's identity.
        assert_eq!(line, format!("got:{word} hello extra sandbox 1000"));
    }
    // The command lines that start the program's sandbox (bubblewrap's, the init's), which
    // every user of the host can read, do not carry the program's arguments (an MCP server's
    // may hold a secret).
    let starters: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains("__sandbox-init"))
        .collect();
    assert!(!starters.is_empty(), "the program's sandbox is running");
    for cmdline in &starters {
        assert!(!cmdline.contains("while read line"), "{cmdline}");
    }
    drop(process.stdin);
    let mut stderr = String::new();
    process.stderr.read_to_string(&mut stderr).await.unwrap();
    assert_eq!(
        stderr, "to-stderr\nto-stderr\n",
        "standard error stays apart"
    );
    let status = process.child.wait().await.unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(
        fixture
            .sandbox
            .redactor()
            .redact("key=s3cret-for-the-server"),
        "key=[secret:SERVER_KEY]"
    );
}

/// A plain HTTP server on the host's loopback that answers `host-says-hello` and counts the
/// connections it gets.
async fn host_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 16\r\nconnection: close\r\n\r\nhost-says-hello\n").await;
            });
        }
    });
    (port, count)
}

#[tokio::test]
async fn no_network_but_the_proxy() {
    let (port, connections) = host_server().await;
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let fixture = sandbox(Options::default()).await;
    // The host's loopback is not the sandbox's: a direct connection reaches nothing.
    let tcp = fixture
        .run(&format!(
            "bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' && echo connected"
        ))
        .await;
    assert_ne!(tcp.exit_code(), 0, "{}", tcp.output);
    assert!(!tcp.output.contains("connected"));
    let udp_out = fixture
        .run(&format!(
            "bash -c 'echo probe > /dev/udp/127.0.0.1/{udp_port}'; echo sent"
        ))
        .await;
    assert!(udp_out.output.contains("sent"), "{}", udp_out.output);
    let dns = fixture.run("getent hosts example.com || echo no-dns").await;
    assert!(dns.output.contains("no-dns"), "{}", dns.output);
    let interfaces = fixture
        .run("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '")
        .await;
    assert_eq!(
        interfaces.output.trim(),
        "lo",
        "loopback is the only interface"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the host's TCP server"
    );
    let mut buffer = [0u8; 64];
    assert!(
        udp.recv(&mut buffer).is_err(),
        "nothing reached the host's UDP socket"
    );
}

#[tokio::test]
async fn the_proxy_lets_through_only_what_the_rules_allow() {
    let (port, connections) = host_server().await;
    let names = std::collections::HashMap::from([
        (
            "a.b.example.com".to_owned(),
            vec!["127.0.0.1".parse().unwrap()],
        ),
        ("example.com".to_owned(), vec!["127.0.0.1".parse().unwrap()]),
        (
            "example.com.evil.test".to_owned(),
            vec!["127.0.0.1".parse().unwrap()],
        ),
    ]);
    let mut fixture = sandbox(Options {
        level: NetworkLevel::Custom,
        allow: vec!["127.0.0.1", ".example.com"],
        names,
        ..Options::default()
    })
    .await;
    let via_proxy = |url: &str| {
        format!(
            "curl -sS --max-time 10 --noproxy '' -x http://127.0.0.1:3128 {url}; echo \" exit=$?\""
        )
    };
    // A loopback server named by a rule of its own is reached.
    let allowed = fixture
        .run(&via_proxy(&format!("http://127.0.0.1:{port}/")))
        .await;
    assert!(
        allowed.output.contains("host-says-hello"),
        "{}",
        allowed.output
    );
    // A host no rule names is refused, over TLS (CONNECT) as over plain HTTP.
    let denied = fixture.run(&via_proxy("https://denied.test/")).await;
    assert!(denied.output.contains("403"), "{}", denied.output);
    let denied_plain = fixture.run(&via_proxy("http://denied.test/")).await;
    assert!(
        denied_plain.output.contains("is not allowed"),
        "{}",
        denied_plain.output
    );
    // `.example.com` covers the domain and its subdomains, not a name that merely starts with
    // it; and a covered name that resolves to loopback is still refused (DNS rebinding).
    for url in [
        "http://a.b.example.com/",
        "http://example.com/",
        "http://example.com.evil.test/",
    ] {
        fixture.run(&via_proxy(url)).await;
    }
    let events = fixture.events();
    let find = |host: &str| {
        events
            .iter()
            .find(|e| e.host == host)
            .unwrap_or_else(|| panic!("no event for {host}: {events:?}"))
            .clone()
    };
    let reached = find("127.0.0.1");
    assert!(
        reached.allowed && reached.rule == "custom 127.0.0.1",
        "{reached:?}"
    );
    let refused = find("denied.test");
    assert!(
        !refused.allowed && refused.rule.contains("no rule of the `custom` level"),
        "{refused:?}"
    );
    for covered in ["a.b.example.com", "example.com"] {
        let event = find(covered);
        assert!(
            !event.allowed && event.rule.contains("resolves to 127.0.0.1"),
            "{event:?}"
        );
    }
    let evil = find("example.com.evil.test");
    assert!(!evil.allowed && evil.rule.contains("no rule"), "{evil:?}");
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the allowed request arrived"
    );
}

#[tokio::test]
async fn open_still_refuses_names_that_resolve_to_this_machine() {
    let names = std::collections::HashMap::from([
        ("rebind.test".to_owned(), vec!["127.0.0.1".parse().unwrap()]),
        (
            "metadata.test".to_owned(),
            vec!["169.254.169.254".parse().unwrap()],
        ),
    ]);
    let mut fixture = sandbox(Options {
        level: NetworkLevel::Open,
        names,
        ..Options::default()
    })
    .await;
    for host in ["rebind.test", "metadata.test"] {
        let out = fixture
            .run(&format!(
                "curl -sS --max-time 5 http://{host}/latest/meta-data/; echo \" exit=$?\""
            ))
            .await;
        assert!(out.output.contains("refused"), "{host}: {}", out.output);
    }
    let events = fixture.events();
    assert!(events.iter().all(|e| !e.allowed), "{events:?}");
    assert!(
        events.iter().any(|e| e.rule.contains("169.254.169.254")),
        "{events:?}"
    );
}

#[tokio::test]
async fn the_host_file_system_is_out_of_reach() {
    let fixture = sandbox(Options::default()).await;
    let host_file = fixture.dir.path().join("host-secret.txt");
    std::fs::write(&host_file, "host-only").unwrap();
    std::os::unix::fs::symlink(&host_file, fixture.workspace().join("link")).unwrap();
    let writes = fixture
        .run("for p in /etc/x /usr/x /x /root/x /.deft/x /.deft/net/x; do (echo x > $p) 2>/dev/null && echo wrote:$p; done; echo ok > /tmp/t && echo tmp-ok; echo ok > ~/h && echo home-ok")
        .await;
    assert!(!writes.output.contains("wrote:"), "{}", writes.output);
    assert!(
        writes.output.contains("tmp-ok") && writes.output.contains("home-ok"),
        "{}",
        writes.output
    );
    let through_link = fixture
        .run("cat link; echo overwritten > link; cat link")
        .await;
    assert!(
        !through_link.output.contains("host-only"),
        "{}",
        through_link.output
    );
    assert_eq!(
        std::fs::read_to_string(&host_file).unwrap(),
        "host-only",
        "the host file is untouched"
    );
    assert!(matches!(
        fixture.sandbox.copy_out("link").await,
        Err(deft_sandbox::SandboxError::OutsideWorkspace { .. })
    ));
    let homes = fixture
        .run("ls -A /root /home /run /srv /mnt /var 2>&1")
        .await;
    let shadow = fixture
        .run("cat /etc/shadow 2>/dev/null | head -c 20")
        .await;
    assert_eq!(shadow.output, "", "what only root may read is hidden");
    for hidden in [".ssh", ".aws", ".docker", ".config"] {
        assert!(
            !homes.output.contains(hidden),
            "{hidden} is visible: {}",
            homes.output
        );
    }
}

#[tokio::test]
async fn host_processes_and_their_environments_are_invisible() {
    let marker = format!("deft-marker-{}", std::process::id());
    let mut host = std::process::Command::new("sleep")
        .arg("30")
        .env("DEFT_TEST_MARKER", &marker)
        .spawn()
        .unwrap();
    let fixture = sandbox(Options::default()).await;
    let out = fixture.run(&format!("ls /proc | grep -c '^[0-9]'; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c {marker}")).await;
    host.kill().unwrap();
    let _ = host.wait();
    let counts: Vec<&str> = out.output.lines().collect();
    assert!(
        counts[0].parse::<u32>().unwrap() < 10,
        "only the sandbox's processes: {}",
        out.output
    );
    assert_eq!(counts.get(1), Some(&"0"), "{}", out.output);
}

#[tokio::test]
async fn bombs_are_contained_and_reported() {
    let limits = Limits {
        memory_bytes: 128 * 1024 * 1024,
        processes: 64,
        ..Limits::default()
    };
    let fixture = sandbox(Options {
        limits,
        ..Options::default()
    })
    .await;
    let fork = fixture
        .run_with(ExecRequest {
            timeout: Duration::from_secs(5),
            ..ExecRequest::shell("bash -c 'b(){ b|b& }; b' 2>/dev/null; sleep 1; echo survived")
        })
        .await;
    assert!(
        fork.limits_hit
            .iter()
            .any(|hit| hit.contains("process limit")),
        "{fork:?}"
    );
    let memory = fixture
        .run("python3 -c 'a=[]\nwhile True: a.append(bytearray(10**7))'")
        .await;
    assert_eq!(memory.ending, Ending::OutOfMemory, "{memory:?}");
    assert!(
        memory
            .limits_hit
            .iter()
            .any(|hit| hit.contains("memory limit")),
        "{memory:?}"
    );
    // The sandbox still works afterwards.
    assert_eq!(fixture.run("echo fine").await.output, "fine\n");
}

#[tokio::test]
async fn a_timeout_kills_the_whole_tree() {
    let fixture = sandbox(Options::default()).await;
    let started = std::time::Instant::now();
    let request = ExecRequest {
        timeout: Duration::from_secs(1),
        ..ExecRequest::shell("sleep 4321 & (sleep 4322 &) ; sleep 4323")
    };
    let outcome = fixture.run_with(request).await;
    assert_eq!(outcome.ending, Ending::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left = std::process::Command::new("pgrep")
        .args(["-f", "sleep 432[123]"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "left behind: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

#[tokio::test]
async fn secrets_never_leave_in_output_or_proc() {
    let secret = "sk-live-4f8a9c1e2b7d";
    let fixture = sandbox(Options {
        secrets: BTreeMap::from([("API_KEY".to_owned(), secret.to_owned())]),
        ..Options::default()
    })
    .await;
    let mut pieces = Vec::new();
    let script = "echo whole=$API_KEY; printf 'split=%s' \"${API_KEY%%4f8a*}\"; sleep 0.2; printf '%s\\n' \"4f8a${API_KEY#*4f8a}\"; echo b64=$(printf %s \"$API_KEY\" | base64)";
    let outcome = fixture
        .sandbox
        .exec(&ExecRequest::shell(script), &mut |piece| {
            pieces.push(piece.to_owned())
        })
        .await
        .unwrap();
    assert!(pieces.len() >= 2, "the output came in pieces: {pieces:?}");
    for text in pieces.iter().chain([&outcome.output]) {
        assert!(
            !text.contains(secret) && !text.contains("c2stbGl2ZS00ZjhhOWMxZTJiN2"),
            "leaked: {text}"
        );
    }
    assert!(
        outcome.output.contains("whole=[secret:API_KEY]"),
        "{}",
        outcome.output
    );
    assert!(
        outcome.output.contains("split=[secret:API_KEY]"),
        "{}",
        outcome.output
    );
    assert!(
        outcome.output.contains("b64=[secret:API_KEY]"),
        "{}",
        outcome.output
    );

    // Inside: the init (pid 1) holds no secret where /proc shows it, nor does any command line.
    let inside = fixture
        .run("cat /proc/1/environ 2>&1 | tr '\\0' ' '; cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
        .await;
    assert!(
        !inside.output.contains("[secret:API_KEY]"),
        "{}",
        inside.output
    );
    // Outside, while a command runs: the secret is in no command line, and in no environment
    // but the sandboxed command's own, which no other host user can read.
    let running = ExecRequest::shell("sleep 2");
    let mut ignore = |_: &str| {};
    let (done, scan) = tokio::join!(fixture.sandbox.exec(&running, &mut ignore), async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        scan_host_proc(secret)
    });
    done.unwrap();
    let (in_cmdlines, holders) = scan;
    assert!(in_cmdlines.is_empty(), "in command lines: {in_cmdlines:?}");
    assert!(!holders.is_empty(), "the sandboxed command has its secret");
    let own_ns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    for pid in &holders {
        // A process may have ended since the scan.
        let Ok(namespace) = std::fs::read_link(format!("/proc/{pid}/ns/pid")) else {
            continue;
        };
        assert_ne!(
            namespace, own_ns,
            "pid {pid} outside the sandbox holds the secret"
        );
        let other_user = std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "cat",
                &format!("/proc/{pid}/environ"),
            ])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&other_user.stdout).contains(secret),
            "another host user read it"
        );
    }
}

/// Pids whose command line holds `secret`, and pids whose environment does.
fn scan_host_proc(secret: &str) -> (Vec<String>, Vec<String>) {
    let (mut cmdlines, mut environs) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let has = |file: &str| {
            std::fs::read(format!("/proc/{pid}/{file}"))
                .is_ok_and(|bytes| bytes.windows(secret.len()).any(|w| w == secret.as_bytes()))
        };
        if has("cmdline") {
            cmdlines.push(pid.clone());
        }
        if has("environ") {
            environs.push(pid);
        }
    }
    (cmdlines, environs)
}

#[tokio::test]
async fn host_sockets_and_new_user_namespaces_are_refused() {
    // /run when deft may write there (root), else the temporary directory: either is a host
    // directory the sandbox does not mount.
    let dir = if rustix::process::geteuid().is_root() {
        std::path::PathBuf::from("/run")
    } else {
        std::env::temp_dir()
    };
    let path = dir
        .join(format!("deft-test-{}.sock", std::process::id()))
        .display()
        .to_string();
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let fixture = sandbox(Options::default()).await;
    let out = fixture
        .run(&format!(
            "test -e {path} && echo visible; python3 -c 'import socket; s=socket.socket(socket.AF_UNIX); s.connect(\"{path}\")' 2>&1 | tail -1; unshare -U true 2>/dev/null || echo no-userns"
        ))
        .await;
    let _ = std::fs::remove_file(&path);
    assert!(!out.output.contains("visible"), "{}", out.output);
    assert!(
        out.output.contains("PermissionError") || out.output.contains("Operation not permitted"),
        "{}",
        out.output
    );
    assert!(out.output.contains("no-userns"), "{}", out.output);
    assert!(
        listener.accept().is_err(),
        "nothing connected to the host socket"
    );
    // AF_VSOCK ignores network namespaces (it reaches the virtual machine's host), and packet
    // and other families have no use here: only the internet families and netlink open.
    let script = [
        "python3 - <<'PY'",
        "import socket",
        "for name, family in [('inet', 2), ('inet6', 10), ('vsock', 40), ('packet', 17), ('unix', 1), ('bluetooth', 31)]:",
        "    try:",
        "        socket.socket(family).close()",
        "        print(name, 'open')",
        "    except OSError as error:",
        "        print(name, error.errno)",
        "PY",
    ]
    .join("\n");
    let families = fixture.run(&script).await;
    assert!(
        families.output.contains("inet open") && families.output.contains("inet6 open"),
        "{}",
        families.output
    );
    for refused in ["vsock 1", "packet 1", "unix 1", "bluetooth 1"] {
        assert!(
            families.output.contains(refused),
            "{refused}: {}",
            families.output
        );
    }
    // The same system calls by other doors: clone with the flag, the x32 numbering (x86-64),
    // and no capability left anywhere a command could reach.
    let doors = fixture
        .run(concat!(
            r#"python3 -c 'import ctypes; libc = ctypes.CDLL(None, use_errno=True); "#,
            r#"print("unshare", libc.unshare(0x10000000), ctypes.get_errno()); "#,
            r#"print("x32", libc.syscall(0x40000000 | 272, 0x10000000), ctypes.get_errno())'; "#,
            r#"grep -E "^Cap(Inh|Prm|Eff|Bnd|Amb)" /proc/self/status"#,
        ))
        .await;
    assert!(doors.output.contains("unshare -1 1"), "{}", doors.output);
    if cfg!(target_arch = "x86_64") {
        assert!(doors.output.contains("x32 -1 1"), "{}", doors.output);
    }
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            doors
                .output
                .lines()
                .any(|line| line.starts_with(set) && line.ends_with("0000000000000000")),
            "{set}: {}",
            doors.output
        );
    }
}

#[tokio::test]
async fn repository_hooks_and_config_stay_read_only_even_when_cloned_after_the_start() {
    let fixture = sandbox(Options::default()).await;
    // The repository appears after the sandbox started, as the agent's clone does.
    let repo = fixture.workspace().join("repo");
    std::fs::create_dir_all(repo.join(".git/hooks")).unwrap();
    std::fs::write(repo.join(".git/config"), "[core]\n").unwrap();
    // A second one whose `.git` is a link out: left alone, not followed.
    let elsewhere = fixture.dir.path().join("elsewhere");
    std::fs::create_dir_all(elsewhere.join("hooks")).unwrap();
    std::fs::create_dir(fixture.workspace().join("linked")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, fixture.workspace().join("linked/.git")).unwrap();
    // As deft gives its clones to the sandbox's user: the read-only mounts are what stop
    // the writes, not ownership.
    give_to_sandbox(&repo);
    give_to_sandbox(&fixture.workspace().join("linked"));
    let attempt = fixture
        .run(
            "cd repo/.git; (echo evil > hooks/pre-commit) 2>/dev/null && echo wrote-hook; \
             (echo '[core] fsmonitor = evil' >> config) 2>/dev/null && echo wrote-config; \
             (mv hooks h2) 2>/dev/null && echo moved-hooks; \
             echo fine > description && echo wrote-elsewhere",
        )
        .await;
    assert!(!attempt.output.contains("wrote-hook"), "{}", attempt.output);
    assert!(
        !attempt.output.contains("wrote-config"),
        "{}",
        attempt.output
    );
    assert!(
        !attempt.output.contains("moved-hooks"),
        "{}",
        attempt.output
    );
    assert!(
        attempt.output.contains("wrote-elsewhere"),
        "the rest of .git stays writable: {}",
        attempt.output
    );
    assert_eq!(
        std::fs::read_to_string(repo.join(".git/config")).unwrap(),
        "[core]\n"
    );
    assert!(!repo.join(".git/hooks/pre-commit").exists());
    // Through the link: nothing of the host was mounted or reached.
    let linked = fixture.run("ls linked/.git/ 2>&1").await;
    assert!(!linked.output.contains("hooks"), "{}", linked.output);
}

#[tokio::test]
async fn other_workspaces_beside_this_one_are_out_of_reach() {
    let fixture = sandbox(Options::default()).await;
    // Made after the start, in the same directory of workspaces the sandbox started with.
    let other = fixture.dir.path().join("other-task");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("their-code.txt"), "not yours").unwrap();
    let read = fixture
        .run("cat /.deft/stage/other-task/their-code.txt 2>&1")
        .await;
    assert!(!read.output.contains("not yours"), "{}", read.output);
    assert!(read.output.contains("No such file"), "{}", read.output);
    // Empty once the workspace is attached (bubblewrap), or never there (a container).
    let listed = fixture.run("ls -A /.deft/stage 2>/dev/null").await;
    assert_eq!(
        listed.output, "",
        "the stage is empty once the workspace is attached"
    );
    let found = fixture
        .run("find / -xdev -name their-code.txt 2>/dev/null; find /workspace /.deft /tmp -name their-code.txt 2>/dev/null")
        .await;
    assert_eq!(found.output, "", "no other workspace anywhere");
}

#[tokio::test]
async fn nothing_a_command_starts_outlives_it_and_a_timeout_leaves_the_sandbox_usable() {
    let fixture = sandbox(Options::default()).await;
    let first = fixture
        .run("(sleep 4331 &); setsid sleep 4332 & echo started")
        .await;
    assert!(first.output.contains("started"), "{}", first.output);
    let second = fixture
        .run("ps -eo pid,args | grep -v grep | grep -c 'sleep 433' || true")
        .await;
    assert_eq!(second.output.trim(), "0", "left running: {}", second.output);
    // No descriptor of the init's (its control socket) reaches a command.
    // `ls` itself holds one more: the directory it reads.
    let descriptors = fixture
        .run_with(ExecRequest {
            argv: vec!["ls".into(), "/proc/self/fd".into()],
            ..ExecRequest::shell("")
        })
        .await;
    assert_eq!(
        descriptors.output.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "3"],
        "{}",
        descriptors.output
    );
    fixture.run("echo kept > /workspace/before-timeout").await;
    let timed_out = fixture
        .run_with(ExecRequest {
            timeout: Duration::from_millis(500),
            ..ExecRequest::shell("sleep 60")
        })
        .await;
    assert_eq!(timed_out.ending, Ending::TimedOut);
    let after = fixture
        .run("cat /workspace/before-timeout; echo $GREETING; cat /proc/1/cmdline | tr '\\0' ' '")
        .await;
    assert_eq!(after.exit_code(), 0, "{}", after.output);
    assert!(
        after.output.contains("kept") && after.output.contains("hello"),
        "{}",
        after.output
    );
}

#[tokio::test]
async fn a_command_given_up_on_is_killed_and_the_next_gets_its_own_answer() {
    let fixture = sandbox(Options::default()).await;
    let request = ExecRequest {
        timeout: Duration::from_secs(30),
        ..ExecRequest::shell("sleep 4341; exit 7")
    };
    // The caller stops waiting (a cancelled task drops the command's future).
    let given_up = tokio::time::timeout(
        Duration::from_millis(300),
        fixture.sandbox.exec(&request, &mut |_| {}),
    )
    .await;
    assert!(
        given_up.is_err(),
        "the command should still have been running"
    );
    let next = fixture.run("echo mine; exit 3").await;
    assert_eq!(next.exit_code(), 3, "{}", next.output);
    assert_eq!(next.output.trim(), "mine");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left = std::process::Command::new("pgrep")
        .args(["-f", "^sleep 4341$"])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "the given-up command still runs");
}

#[tokio::test]
async fn cpu_time_and_file_size_are_limited_per_command() {
    let fixture = sandbox(Options {
        limits: Limits {
            cpu_seconds: 1,
            file_size_bytes: 1024 * 1024,
            ..Limits::default()
        },
        ..Options::default()
    })
    .await;
    let spin = fixture
        .run_with(ExecRequest {
            timeout: Duration::from_secs(20),
            ..ExecRequest::shell("while :; do :; done")
        })
        .await;
    assert!(
        matches!(spin.ending, Ending::Signaled(24) | Ending::Signaled(9)),
        "a command past its CPU time is stopped by the kernel: {:?} {}",
        spin.ending,
        spin.output
    );
    assert!(
        spin.duration < Duration::from_secs(10),
        "{:?}",
        spin.duration
    );
    let big = fixture
        .run("(head -c 3000000 /dev/zero > big) 2>/dev/null; echo exit=$?; wc -c < big")
        .await;
    assert!(
        !big.output.contains("exit=0"),
        "{:?} {}",
        big.ending,
        big.output
    );
    assert!(
        big.output.trim_end().ends_with("1048576"),
        "{:?} {:?}",
        big.ending,
        big.output
    );
    // Each command has its own CPU time: the next one runs.
    let next = fixture.run("echo still-here").await;
    assert_eq!(next.output.trim(), "still-here");
}

#[tokio::test]
async fn long_running_programs_wait_while_deft_uses_the_clones() {
    let fixture = sandbox(Options::default()).await;
    // A program that keeps writing to the workspace, as a hostile MCP server would.
    let process = fixture
        .sandbox
        .spawn(
            &ExecRequest::shell(
                "i=0; while :; do i=$((i+1)); echo $i > /workspace/tick; sleep 0.005; done",
            ),
            &[],
        )
        .await
        .expect("the program starts");
    let tick = fixture.workspace().join("tick");
    let read = || std::fs::read_to_string(&tick).unwrap_or_default();
    let started = std::time::Instant::now();
    while read().trim().parse::<u64>().unwrap_or(0) < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the program never ran"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let paused = fixture.sandbox.pause_programs();
    let frozen = read();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read(), frozen, "the program wrote while paused");
    drop(paused);
    let resumed = std::time::Instant::now();
    while read() == frozen {
        assert!(
            resumed.elapsed() < Duration::from_secs(20),
            "the program never resumed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(process);
}
