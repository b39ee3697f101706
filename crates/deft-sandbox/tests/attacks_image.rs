//! The attack suite on an image's root: a Debian root filesystem made by `mmdebstrap`, as a
//! repository's Dockerfile makes one. Every guarantee holds there too.

#[path = "attacks/suite.rs"]
mod suite;

use deft_sandbox::{NativeBackend as _, NativeSandbox as _};

async fn backend() -> suite::Backend {
    let backend = deft_sandbox::bwrap::BwrapBackend::new(
        deft_sandbox::HostSupport::probe().await,
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_deft-sandbox-helper")),
    )
    .expect("bubblewrap works here");
    suite::Backend {
        backend: Box::new(backend),
        keep: Box::new(()),
    }
}

fn root() -> Option<deft_sandbox::ImageRoot> {
    Some(deft_sandbox::ImageRoot {
        rootfs: deft_testkit::rootfs::debian(),
        env: vec![("FROM_THE_IMAGE".to_owned(), "yes".to_owned())],
    })
}

/// A bubblewrap backend, and the spec of a sandbox on `root`.
async fn image_spec(
    workspace: std::path::PathBuf,
    state_dir: std::path::PathBuf,
    root: Option<deft_sandbox::ImageRoot>,
) -> (deft_sandbox::bwrap::BwrapBackend, deft_sandbox::SandboxSpec) {
    let backend = deft_sandbox::bwrap::BwrapBackend::new(
        deft_sandbox::HostSupport::probe().await,
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_deft-sandbox-helper")),
    )
    .unwrap();
    let spec = deft_sandbox::SandboxSpec {
        workspace,
        state_dir,
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
    };
    (backend, spec)
}

#[tokio::test]
async fn commands_see_the_images_files_and_environment_not_the_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("workspace");
    std::fs::create_dir(&workspace).unwrap();
    let (backend, spec) = image_spec(workspace, dir.path().join("state"), root()).await;
    let (sender, _events) = tokio::sync::mpsc::unbounded_channel();
    let sandbox = backend.create(spec, sender).await.unwrap();
    let outcome = sandbox
        .exec(
            &deft_sandbox::ExecRequest::shell(
                "test -e /usr/bin/bwrap && echo host-usr || echo image-usr; echo $FROM_THE_IMAGE; \
                 test -e /etc/ld.so.preload && echo preload-exists; \
                 ls /.deft/lib | grep -c . ; id -un",
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
        !outcome.output.contains("preload-exists"),
        "{}",
        outcome.output
    );
    assert_eq!(lines.last(), Some(&"deft"), "{}", outcome.output);
    // The host's own files beside the image's are not there: deft's data, the host's homes.
    let marker = dir.path().join("host-only");
    std::fs::write(&marker, "x").unwrap();
    let seen = sandbox
        .exec(
            &deft_sandbox::ExecRequest::shell(&format!(
                "cat {} 2>&1; ls /root 2>&1 | head -1",
                marker.display()
            )),
            &mut |_| {},
        )
        .await
        .unwrap();
    assert!(seen.output.contains("No such file"), "{}", seen.output);
}

/// A copy of the Debian root (linked, not copied: only new files are written) whose
/// `/etc/ld.so.preload` names a library that leaves a mark in `/workspace` when loaded.
fn image_with_a_preload(copy: &std::path::Path) -> std::path::PathBuf {
    let rootfs = copy.join("root");
    let status = std::process::Command::new("cp")
        .arg("-al")
        .arg(deft_testkit::rootfs::debian())
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(status.success());
    let source = copy.join("evil.c");
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
    rootfs
}

fn scratch_copy() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("preload-")
        .tempdir_in(deft_testkit::rootfs::cache_dir())
        .unwrap()
}

/// An image whose `/etc/ld.so.preload` names a library of its own: the host's loader, which
/// starts deft's init, would run it inside the init. Nothing in the sandbox may load it.
#[tokio::test]
async fn an_images_preload_never_reaches_the_init() {
    let copy = scratch_copy();
    let rootfs = image_with_a_preload(copy.path());

    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("workspace");
    std::fs::create_dir(&workspace).unwrap();
    let (backend, spec) = image_spec(
        workspace.clone(),
        dir.path().join("state"),
        Some(deft_sandbox::ImageRoot {
            rootfs,
            env: vec![],
        }),
    )
    .await;
    let (sender, _events) = tokio::sync::mpsc::unbounded_channel();
    let sandbox = backend.create(spec, sender).await.unwrap();
    let outcome = sandbox
        .exec(
            &deft_sandbox::ExecRequest::shell("cat /etc/ld.so.preload; echo done"),
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

/// The same preload where deft's cover would miss it (from the review): `/etc` a link to
/// another directory of the image, or the preload file a link into `/tmp`, which a later
/// mount covers. Such images are refused before any program starts.
#[tokio::test]
async fn an_image_whose_etc_or_preload_is_a_link_is_refused() {
    let copy = scratch_copy();
    let rootfs = image_with_a_preload(copy.path());
    std::fs::rename(rootfs.join("etc"), rootfs.join("usr/etc")).unwrap();
    std::os::unix::fs::symlink("usr/etc", rootfs.join("etc")).unwrap();
    let linked_etc = deft_sandbox::ImageRoot {
        rootfs: rootfs.clone(),
        env: vec![],
    };
    let error = linked_etc.check().unwrap_err().to_string();
    assert!(error.contains("/etc is not a directory"), "{error}");

    std::fs::remove_file(rootfs.join("etc")).unwrap();
    std::fs::rename(rootfs.join("usr/etc"), rootfs.join("etc")).unwrap();
    std::fs::remove_file(rootfs.join("etc/ld.so.preload")).unwrap();
    std::os::unix::fs::symlink("/tmp/p", rootfs.join("etc/ld.so.preload")).unwrap();
    let error = linked_etc.check().unwrap_err().to_string();
    assert!(
        error.contains("ld.so.preload is not a regular file"),
        "{error}"
    );

    // And the backend refuses it, before any program of the image runs.
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("workspace");
    std::fs::create_dir(&workspace).unwrap();
    let (backend, spec) = image_spec(
        workspace.clone(),
        dir.path().join("state"),
        Some(linked_etc),
    )
    .await;
    let (sender, _events) = tokio::sync::mpsc::unbounded_channel();
    assert!(backend.create(spec, sender).await.is_err());
    assert!(!workspace.join("preloaded").exists());
}
