//! The attack suite of `deft-sandbox` against the container backend, on a Debian root
//! filesystem made by `mmdebstrap` (as a repository's Dockerfile makes one), with a real
//! Podman (`deft_testkit::podman`, its storage under the target directory); and what only
//! this backend does.

#[path = "../../deft-sandbox/tests/attacks/suite.rs"]
mod suite;

use std::path::PathBuf;

use deft_sandbox::{ExecRequest, ImageRoot, SandboxError, SandboxSpec};

const HELPER: &str = env!("CARGO_BIN_EXE_deft-container-helper");

async fn backend() -> suite::Backend {
    let dir = deft_testkit::rootfs::cache_dir().join("podman");
    // conmon marks an out-of-memory kill with a file `oom` in the service's working directory,
    // which would otherwise be this crate's.
    std::fs::create_dir_all(&dir).unwrap();
    std::env::set_current_dir(&dir).unwrap();
    let service = deft_testkit::podman::PodmanService::start(&dir);
    let backend =
        deft_container::ContainerBackend::connect(service.socket(), PathBuf::from(HELPER))
            .await
            .expect("the container backend runs on this Podman");
    suite::Backend {
        backend: Box::new(backend),
        keep: Box::new(service),
    }
}

fn root() -> Option<ImageRoot> {
    Some(ImageRoot {
        rootfs: deft_testkit::rootfs::debian(),
        env: vec![("FROM_THE_IMAGE".to_owned(), "yes".to_owned())],
    })
}

fn spec(dir: &std::path::Path, root: Option<ImageRoot>) -> SandboxSpec {
    let workspace = dir.join("workspace");
    std::fs::create_dir_all(&workspace).unwrap();
    SandboxSpec {
        workspace,
        state_dir: dir.join("state"),
        env: Default::default(),
        secrets: Default::default(),
        network: deft_egress::EgressPolicy::new(
            deft_core::NetworkLevel::Connections,
            vec![],
            deft_egress::DomainSet::default(),
        ),
        resolver: deft_egress::Resolver::System,
        limits: deft_sandbox::Limits::default(),
        root,
    }
}

#[tokio::test]
async fn a_sandbox_without_an_image_is_refused_saying_why() {
    let backend = backend().await;
    let dir = tempfile::tempdir().unwrap();
    let (sender, _events) = tokio::sync::mpsc::unbounded_channel();
    let refused = backend
        .backend
        .create(spec(dir.path(), None), sender)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, SandboxError::Unsupported(why) if why.contains("image's root filesystem")),
        "{refused}"
    );
}

#[tokio::test]
async fn commands_see_the_images_files_and_environment_not_the_hosts() {
    let backend = backend().await;
    let dir = tempfile::tempdir().unwrap();
    let (sender, _events) = tokio::sync::mpsc::unbounded_channel();
    let sandbox = backend
        .backend
        .create(spec(dir.path(), root()), sender)
        .await
        .unwrap();
    let outcome = sandbox
        .exec(
            &ExecRequest::shell(
                "test -e /usr/bin/bwrap && echo host-usr || echo image-usr; echo $FROM_THE_IMAGE; \
                 test -s /etc/ld.so.preload && echo preload-says-something; \
                 ls /.deft/lib | grep -c . ; id -un; hostname; cat /etc/hostname; \
                 touch /etc/x 2>/dev/null || echo etc-read-only; \
                 grep Seccomp_filters /proc/self/status",
            ),
            &mut |_| {},
        )
        .await
        .unwrap();
    assert!(std::path::Path::new("/usr/bin/bwrap").exists());
    let lines: Vec<&str> = outcome.output.lines().collect();
    assert_eq!(lines[0], "image-usr", "{}", outcome.output);
    assert_eq!(lines[1], "yes", "the image's ENV reaches commands");
    assert!(
        !outcome.output.contains("preload-says"),
        "{}",
        outcome.output
    );
    assert_eq!(
        lines[3..7],
        ["deft", "sandbox", "sandbox", "etc-read-only"],
        "{}",
        outcome.output
    );
    // deft's three filters, and Podman's default profile beneath them.
    assert_eq!(lines[7], "Seccomp_filters:\t4", "{}", outcome.output);
    sandbox.destroy().await.unwrap();
}

/// An image whose `/etc/ld.so.preload` names a library of its own: the host's loader, which
/// starts deft's init, would run it inside the init. Nothing in the sandbox may load it.
#[tokio::test]
async fn an_images_preload_never_reaches_the_init() {
    let debian = deft_testkit::rootfs::debian();
    let copy = tempfile::Builder::new()
        .prefix("preload-")
        .tempdir_in(deft_testkit::rootfs::cache_dir())
        .unwrap();
    let rootfs = copy.path().join("root");
    // Linked, not copied: the same file system, and only new files are written.
    let status = std::process::Command::new("cp")
        .arg("-al")
        .arg(&debian)
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(status.success());
    let source = copy.path().join("evil.c");
    std::fs::write(
        &source,
        "#include <fcntl.h>\n#include <unistd.h>\n\
         __attribute__((constructor)) static void evil(void) {\n\
           int fd = open(\"/workspace/preloaded\", O_WRONLY | O_CREAT | O_APPEND, 0666);\n\
           if (fd >= 0) { write(fd, \"x\", 1); close(fd); }\n\
         }\n",
    )
    .unwrap();
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(rootfs.join("usr/lib/evil.so"))
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success(), "a C compiler builds the library");
    std::fs::remove_file(rootfs.join("etc/ld.so.preload")).ok();
    std::fs::write(rootfs.join("etc/ld.so.preload"), "/usr/lib/evil.so\n").unwrap();

    let backend = backend().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        dir.path(),
        Some(ImageRoot {
            rootfs,
            env: vec![],
        }),
    );
    let workspace = spec.workspace.clone();
    let (sender, _events) = tokio::sync::mpsc::unbounded_channel();
    let sandbox = backend.backend.create(spec, sender).await.unwrap();
    let outcome = sandbox
        .exec(
            &ExecRequest::shell("cat /etc/ld.so.preload; echo done"),
            &mut |_| {},
        )
        .await
        .unwrap();
    assert_eq!(outcome.output.trim(), "done", "{}", outcome.output);
    assert!(
        !workspace.join("preloaded").exists(),
        "the image's preload library ran in the sandbox"
    );
}

/// A program dropped takes its container along; destroying a sandbox removes its containers,
/// the programs' too, and its directory.
#[tokio::test]
async fn dropped_programs_and_destroyed_sandboxes_leave_no_container_behind() {
    let backend = backend().await;
    let dir = tempfile::tempdir().unwrap();
    let (sender, _events) = tokio::sync::mpsc::unbounded_channel();
    let spec = spec(dir.path(), root());
    let state = spec.state_dir.clone();
    let sandbox = backend.backend.create(spec, sender).await.unwrap();
    let dropped = sandbox
        .spawn(&ExecRequest::shell("cat"), &[])
        .await
        .unwrap();
    let _program = sandbox
        .spawn(&ExecRequest::shell("cat"), &[])
        .await
        .unwrap();
    let ours = |service: &deft_testkit::podman::PodmanService| {
        let listed = service
            .cli()
            .args([
                "ps",
                "-a",
                "--filter",
                "label=deft.sandbox",
                "--format",
                "{{.Names}}",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter(|name| name.contains(&std::process::id().to_string()))
            .count()
    };
    let service = backend
        .keep
        .downcast_ref::<deft_testkit::podman::PodmanService>()
        .unwrap();
    assert_eq!(
        ours(service),
        3,
        "the commands' container and the programs'"
    );
    drop(dropped);
    let started = std::time::Instant::now();
    while ours(service) > 2 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "a dropped program's container stays"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    sandbox.destroy().await.unwrap();
    let started = std::time::Instant::now();
    while ours(service) > 0 || state.exists() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "left behind"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
