//! Builds real Dockerfiles with a real Podman (`deft_testkit::podman`), from a Debian base image
//! made offline, and checks what reaches the sandbox: the unpacked root, its config, the cache,
//! and the refusals and failures a person sees.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use deft_images::{BuildRequest, ImageError, Images, Prepared};
use deft_testkit::podman::{PodmanService, PrivateRegistry, base_image};

const GREET: &str = r#"FROM localhost/deft-test-base:1
RUN printf '#!/bin/sh\necho "hello $GREETING"\n' > /usr/local/bin/greet && chmod +x /usr/local/bin/greet
ENV GREETING=world
WORKDIR /srv
"#;

struct Builder {
    service: PodmanService,
    cache: tempfile::TempDir,
}

impl Builder {
    /// A Podman service with the base image, and an empty cache.
    fn start() -> Builder {
        let storage = deft_testkit::rootfs::cache_dir().join("podman");
        let service = PodmanService::start(&storage);
        assert_eq!(base_image(&service), "localhost/deft-test-base:1");
        Builder {
            service,
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn images(&self, budget_bytes: u64) -> Images {
        Images::connect(self.service.socket(), self.cache.path(), budget_bytes).unwrap()
    }

    /// Whether the builder still has an image of this name.
    fn has_image(&self, name: &str) -> bool {
        let status = self
            .service
            .cli()
            .args(["image", "exists", name])
            .status()
            .unwrap();
        status.success()
    }
}

const BUDGET: u64 = 10 << 30;

enum Entry<'a> {
    File(&'a str, &'a str),
    Symlink(&'a str, &'a str),
}

fn context(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        match *entry {
            Entry::File(path, text) => {
                header.set_size(text.len() as u64);
                tar.append_data(&mut header, path, text.as_bytes()).unwrap();
            }
            Entry::Symlink(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                tar.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    tar.into_inner().unwrap()
}

fn request(dockerfile: &str) -> BuildRequest {
    BuildRequest {
        context_tar: context(&[Entry::File("Dockerfile", dockerfile)]),
        dockerfile: "Dockerfile".to_owned(),
        contents_id: None,
        network: Default::default(),
    }
}

/// Prepares `request`, returning the result and the builder's lines.
async fn prepare(
    images: &Images,
    request: &BuildRequest,
) -> (Result<Prepared, ImageError>, Vec<String>) {
    let mut lines = Vec::new();
    let result = images
        .prepare(request, &mut |line: &str| lines.push(line.to_owned()))
        .await;
    (result, lines)
}

#[tokio::test]
async fn a_dockerfile_becomes_an_unpacked_root_with_its_config_and_is_cached() {
    let builder = Builder::start();
    let images = builder.images(BUDGET);
    let request = request(GREET);

    let (prepared, lines) = prepare(&images, &request).await;
    let prepared = prepared.unwrap();
    assert!(prepared.built);
    assert_eq!(prepared.key, request.key());
    assert_eq!(prepared.rootfs, builder.cache.path().join(&prepared.key));
    assert!(
        lines.iter().any(|line| line.contains("RUN printf")),
        "{lines:#?}"
    );

    let greet = prepared.rootfs.join("usr/local/bin/greet");
    assert_eq!(
        std::fs::read_to_string(&greet).unwrap(),
        "#!/bin/sh\necho \"hello $GREETING\"\n"
    );
    let mode = std::fs::metadata(&greet).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "greet is executable: {mode:o}");
    assert!(
        prepared.rootfs.join("usr/bin/dpkg").is_file(),
        "the base image is there too"
    );
    for directory in ["", "usr", "usr/local/bin", "root", "srv"] {
        let mode = std::fs::metadata(prepared.rootfs.join(directory))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o001,
            0o001,
            "/{directory} is open to other users: {mode:o}"
        );
    }
    assert!(
        prepared
            .config
            .env
            .contains(&("GREETING".to_owned(), "world".to_owned())),
        "{:?}",
        prepared.config.env
    );
    assert!(prepared.config.env.iter().any(|(name, _)| name == "PATH"));
    assert_eq!(prepared.config.workdir.as_deref(), Some("/srv"));
    assert_eq!(prepared.config.user, None);

    // Only the unpacked copy stays: no tag, no export container.
    assert!(!builder.has_image(&format!("deft-env:{}", prepared.key)));
    let containers = builder
        .service
        .cli()
        .args(["ps", "--all", "--quiet", "--filter"])
        .arg(format!("name=deft-export-{}", prepared.key))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&containers.stdout).trim(), "");

    let (again, lines) = prepare(&images, &request).await;
    let again = again.unwrap();
    assert!(!again.built);
    assert!(lines.is_empty(), "{lines:#?}");
    assert_eq!(again.rootfs, prepared.rootfs);
    assert_eq!(again.config, prepared.config);

    // Another process's `Images` on the same cache finds it too.
    drop((prepared, again, images));
    let (reopened, _) = prepare(&builder.images(BUDGET), &request).await;
    assert!(!reopened.unwrap().built);
}

#[tokio::test]
async fn preparations_of_one_context_at_once_build_it_once() {
    let builder = Builder::start();
    let images = builder.images(BUDGET);
    // Its own layers: sharing the first test's would make that one's image an intermediate of
    // this build, which the builder then keeps while this build uses it.
    let request = request("FROM localhost/deft-test-base:1\nRUN echo once > /srv/once\n");
    let ((first, _), (second, _)) =
        tokio::join!(prepare(&images, &request), prepare(&images, &request));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_ne!(first.built, second.built, "exactly one of them builds");
    assert_eq!(first.rootfs, second.rootfs);
    assert_eq!(
        std::fs::read_to_string(first.rootfs.join("srv/once")).unwrap(),
        "once\n"
    );
}

#[tokio::test]
async fn a_failing_step_is_a_failed_build_with_the_last_lines() {
    let builder = Builder::start();
    let images = builder.images(BUDGET);
    let dockerfile = "FROM localhost/deft-test-base:1\nRUN echo about to fail && exit 3\n";
    let (result, lines) = prepare(&images, &request(dockerfile)).await;
    let Err(ImageError::BuildFailed { last_lines }) = result else {
        panic!("expected a failed build, got {result:?}");
    };
    assert!(last_lines.contains("about to fail"), "{last_lines}");
    assert!(last_lines.contains("exit status 3"), "{last_lines}");
    assert!(
        lines.iter().any(|line| line == "about to fail"),
        "{lines:#?}"
    );
    let message = ImageError::BuildFailed { last_lines }.to_string();
    assert!(message.contains("fix the Dockerfile"), "{message}");
    assert_eq!(
        std::fs::read_dir(builder.cache.path()).unwrap().count(),
        0,
        "nothing cached"
    );
}

#[tokio::test]
async fn a_run_mount_is_refused_naming_the_line_before_any_build() {
    let builder = Builder::start();
    let images = builder.images(BUDGET);
    let dockerfile =
        "FROM localhost/deft-test-base:1\nRUN --mount=type=bind,source=/,target=/host true\n";
    let (result, lines) = prepare(&images, &request(dockerfile)).await;
    let Err(ImageError::Refused { reason }) = result else {
        panic!("expected a refusal, got {result:?}");
    };
    assert!(reason.contains("line 2 of `Dockerfile`"), "{reason}");
    assert!(
        reason.contains("RUN --mount=type=bind,source=/,target=/host true"),
        "{reason}"
    );
    assert!(lines.is_empty(), "the builder never saw it: {lines:#?}");
}

#[tokio::test]
async fn a_context_with_a_link_to_the_hosts_files_is_refused() {
    let builder = Builder::start();
    let images = builder.images(BUDGET);
    let request = BuildRequest {
        context_tar: context(&[
            Entry::File(
                "Dockerfile",
                "FROM localhost/deft-test-base:1\nCOPY passwd /passwd\n",
            ),
            Entry::Symlink("passwd", "/etc/passwd"),
        ]),
        dockerfile: "Dockerfile".to_owned(),
        contents_id: None,
        network: Default::default(),
    };
    let (result, lines) = prepare(&images, &request).await;
    let Err(ImageError::Refused { reason }) = result else {
        panic!("expected a refusal, got {result:?}");
    };
    assert!(
        reason.contains("`passwd`") && reason.contains("/etc/passwd"),
        "{reason}"
    );
    assert!(lines.is_empty());
}

#[tokio::test]
async fn a_base_image_behind_credentials_is_a_private_image() {
    let builder = Builder::start();
    let images = builder.images(BUDGET);
    let registry = PrivateRegistry::start();
    let image = format!("{}/team/private:1", registry.address);
    let (result, lines) = prepare(&images, &request(&format!("FROM {image}\nRUN true\n"))).await;
    let Err(ImageError::PrivateImage { image: named }) = result else {
        panic!("expected a private image, got {result:?}\n{lines:#?}");
    };
    assert_eq!(named, image);
    let message = ImageError::PrivateImage { image: named }.to_string();
    assert!(
        message.contains("only public images are supported"),
        "{message}"
    );
}

#[tokio::test]
async fn pruning_removes_old_unused_images_but_never_one_in_use() {
    let builder = Builder::start();
    // Any image is over this budget: every build prunes all it may.
    let images = builder.images(1);
    let dockerfile = |n: u32| format!("FROM localhost/deft-test-base:1\nRUN echo {n} > /n\n");

    let (held, _) = prepare(&images, &request(&dockerfile(1))).await;
    let held = held.unwrap();
    let (unused, _) = prepare(&images, &request(&dockerfile(2))).await;
    let unused = unused.unwrap();
    assert!(held.rootfs.is_dir(), "in use while the second was built");
    let unused_rootfs: PathBuf = unused.rootfs.clone();
    drop(unused);

    let (newest, _) = prepare(&images, &request(&dockerfile(3))).await;
    let newest = newest.unwrap();
    assert!(newest.rootfs.is_dir());
    assert!(held.rootfs.is_dir(), "an image in use is never pruned");
    assert_eq!(
        std::fs::read_to_string(held.rootfs.join("n")).unwrap(),
        "1\n"
    );
    assert!(!unused_rootfs.exists(), "the old unused image was pruned");
    assert!(!unused_rootfs.with_extension("json").exists());
    let (rebuilt, _) = prepare(&images, &request(&dockerfile(1))).await;
    assert!(
        !rebuilt.unwrap().built,
        "the held image is still a cache hit"
    );
}

#[tokio::test]
async fn describe_names_the_builder() {
    let builder = Builder::start();
    let description = builder.images(BUDGET).describe().await.unwrap();
    assert!(description.starts_with("Podman Engine "), "{description}");
    assert!(description.contains("Engine API"), "{description}");
}

#[tokio::test]
async fn no_builder_at_the_socket_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("podman.sock");
    let error = Images::connect(&socket, &dir.path().join("cache"), BUDGET)
        .err()
        .unwrap();
    assert!(matches!(error, ImageError::Unavailable { .. }), "{error:?}");
    let message = error.to_string();
    let start = format!(
        "`podman system service --time=0 unix://{}`",
        socket.display()
    );
    assert!(message.contains(&start), "{message}");

    // A socket that exists but where nothing listens any more.
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    drop(listener);
    let images = Images::connect(&socket, &dir.path().join("cache"), BUDGET).unwrap();
    let error = images.describe().await.unwrap_err();
    assert!(matches!(error, ImageError::Unavailable { .. }), "{error:?}");
}

/// A hostile Dockerfile's `RUN` tries what it would to reach this machine's own services on
/// loopback (deft's API, a cloud's metadata relay): it reaches nothing. Podman's Engine API
/// runs `RUN` in the host's network namespace unless told otherwise (its `networkmode` is not
/// the network namespace): before the fix this connected.
#[tokio::test]
async fn run_steps_reach_nothing_on_the_hosts_network() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let builder = Builder::start();
    let images = builder.images(BUDGET);
    let dockerfile = format!(
        "FROM localhost/deft-test-base:1\n\
         RUN bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected$((6*7))' || echo refused$((6*7)); \
             echo interfaces $(tail -n +3 /proc/net/dev | cut -d: -f1)\n"
    );
    let (result, lines) = prepare(&images, &request(&dockerfile)).await;
    result.unwrap();
    let output = lines.join("\n");
    // The markers are computed by the shell: the command itself, echoed, holds neither.
    assert!(output.contains("refused42"), "{output}");
    assert!(!output.contains("connected42"), "{output}");
    assert!(output.contains("interfaces lo"), "{output}");
    assert!(
        !output.contains("eth0"),
        "no interface of the host: {output}"
    );
    assert!(
        listener.accept().is_err(),
        "nothing connected to the host's listener"
    );
}

/// A base image's ONBUILD triggers run in the build that uses it, unseen by the lint: such a
/// base is refused before anything is built.
#[tokio::test]
async fn a_base_image_with_onbuild_triggers_is_refused() {
    let builder = Builder::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM localhost/deft-test-base:1\nONBUILD RUN echo the-trigger-ran\n",
    )
    .unwrap();
    let made = builder
        .service
        .cli()
        .args(["build", "--format", "docker", "--network", "none"])
        .args(["-t", "localhost/deft-onbuild:1"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let images = builder.images(BUDGET);
    let (result, lines) = prepare(
        &images,
        &request("FROM localhost/deft-onbuild:1\nRUN true\n"),
    )
    .await;
    match result {
        Err(ImageError::Refused { reason }) => {
            assert!(reason.contains("ONBUILD"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !lines.iter().any(|line| line.contains("the-trigger-ran")),
        "{lines:?}"
    );
}
