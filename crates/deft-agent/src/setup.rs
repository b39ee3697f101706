//! What a task's commands run on: the host's system directories, or the root filesystem of
//! the image that a repository's Dockerfile makes, built by a real image builder
//! ([`deft_images`]). The Dockerfile and its build context are read from the task's private
//! repositories, at the base the task started from: never from the workspace, where a command
//! could have put a link or a FIFO in their place.

use std::path::PathBuf;

/// The image builder a deft uses, shared by its runs.
#[derive(Clone)]
pub struct ImageBuilder(pub std::sync::Arc<deft_images::Images>);

impl std::fmt::Debug for ImageBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ImageBuilder")
    }
}

/// Where a repository keeps the Dockerfile of its environment, in the order looked at.
pub const DOCKERFILES: [&str; 2] = ["Dockerfile", ".deft/Dockerfile"];

/// One of the task's repositories, as the environment is chosen from it.
#[derive(Debug)]
pub struct RepoBase {
    pub name: String,
    /// The task's private repository for it.
    pub private: PathBuf,
    /// The commit the task started from.
    pub commit: String,
    /// What its owner chose it runs on.
    pub environment: deft_core::RepoEnvironment,
    /// `commit`'s regular files, when they were listed already; else git lists them.
    pub regular: Option<Vec<String>>,
}

impl RepoBase {
    /// Which of `paths` are regular files of the base.
    async fn regular_among(&self, paths: &[&str]) -> Result<Vec<String>, SetupError> {
        if let Some(regular) = &self.regular {
            return Ok(paths
                .iter()
                .filter(|path| regular.iter().any(|file| file == *path))
                .map(|path| (*path).to_owned())
                .collect());
        }
        Ok(deft_forge::private::regular_files(&self.private, &self.commit, paths).await?)
    }
}

/// Why the environment cannot be chosen.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Forge(#[from] deft_forge::ForgeError),
    #[error(
        "{repo}: {message}; fix the file, or set the repository's environment (`deft env from`)"
    )]
    DevContainer { repo: String, message: String },
    #[error(
        "{repo}'s environment is `dockerfile {path}`, and its base has no such file (or it is not a regular file); commit it, or change the setting (`deft env from --repo {repo} auto`)"
    )]
    MissingDockerfile { repo: String, path: String },
}

/// The environment the task's repositories ask for.
#[derive(Debug)]
pub enum Wanted {
    /// No repository has a Dockerfile: the host's tools.
    Host,
    /// The first repository with a Dockerfile; its tree at the base is the build context.
    Dockerfile {
        repo: String,
        path: String,
        context: Vec<u8>,
        /// git's id of the tree the context holds: the same files, the same image.
        tree: String,
        /// Other repositories of the task whose Dockerfiles are not used (one sandbox, one
        /// root), said in the task's log.
        ignored: Vec<String>,
    },
}

/// Looks at each repository's base for its environment, as its setting says.
pub async fn wanted(repos: &[RepoBase]) -> Result<Wanted, SetupError> {
    let mut chosen: Option<(&RepoBase, Source)> = None;
    let mut ignored = Vec::new();
    for repo in repos {
        let source = match &repo.environment {
            deft_core::RepoEnvironment::Host => continue,
            deft_core::RepoEnvironment::Image(name) => Source::Image(name.clone()),
            deft_core::RepoEnvironment::Dockerfile(path) => {
                let files = repo.regular_among(&[path.as_str()]).await?;
                if !files.iter().any(|file| file == path) {
                    return Err(SetupError::MissingDockerfile {
                        repo: repo.name.clone(),
                        path: path.clone(),
                    });
                }
                Source::Dockerfile(path.clone())
            }
            deft_core::RepoEnvironment::Auto => {
                let mut wanted = DOCKERFILES.to_vec();
                wanted.push(crate::devcontainer::PATH);
                let files = repo.regular_among(&wanted).await?;
                // In the order of DOCKERFILES, not of git's listing.
                match wanted
                    .iter()
                    .find(|wanted| files.iter().any(|file| file == *wanted))
                {
                    None => continue,
                    Some(&crate::devcontainer::PATH) => devcontainer(repo).await?,
                    Some(path) => Source::Dockerfile((*path).to_owned()),
                }
            }
        };
        match chosen {
            None => chosen = Some((repo, source)),
            Some(_) => ignored.push(format!("{}/{}", repo.name, source.describe())),
        }
    }
    let Some((repo, source)) = chosen else {
        return Ok(Wanted::Host);
    };
    match source {
        Source::Dockerfile(path) => {
            let context = deft_forge::private::archive(&repo.private, &repo.commit).await?;
            let tree = deft_forge::private::tree_of(&repo.private, &repo.commit).await?;
            Ok(Wanted::Dockerfile {
                repo: repo.name.clone(),
                path,
                context,
                tree,
                ignored,
            })
        }
        // A context below the root: git's tree of that directory.
        Source::Context { dir, dockerfile } => {
            let treeish = format!("{}:{dir}", repo.commit);
            let context = deft_forge::private::archive(&repo.private, &treeish).await?;
            let tree = deft_forge::private::tree_of(&repo.private, &treeish).await?;
            Ok(Wanted::Dockerfile {
                repo: repo.name.clone(),
                path: dockerfile,
                context,
                tree,
                ignored,
            })
        }
        // A public image as it is: a Dockerfile of one line, in a context of its own.
        Source::Image(name) => Ok(Wanted::Dockerfile {
            repo: repo.name.clone(),
            path: "Dockerfile".to_owned(),
            context: one_file_tar("Dockerfile", format!("FROM {name}\n").as_bytes()),
            tree: format!("image {name}"),
            ignored,
        }),
    }
}

/// The operator's default image, for tasks whose repositories have no Dockerfile.
pub fn default_image(name: &str) -> Wanted {
    Wanted::Dockerfile {
        repo: "the default image".to_owned(),
        path: "Dockerfile".to_owned(),
        context: one_file_tar("Dockerfile", format!("FROM {name}\n").as_bytes()),
        tree: format!("image {name}"),
        ignored: Vec::new(),
    }
}

/// Where a repository's environment comes from.
enum Source {
    /// A Dockerfile at this path, the whole repository its context.
    Dockerfile(String),
    /// A Dockerfile inside the context `dir` (a directory of the repository).
    Context {
        dir: String,
        dockerfile: String,
    },
    Image(String),
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::Dockerfile(path) => path.clone(),
            Source::Context { dir, dockerfile } => format!("{dir}/{dockerfile}"),
            Source::Image(name) => format!("image {name}"),
        }
    }
}

/// What the repository's `.devcontainer/devcontainer.json` asks for, checked against its
/// tree: an image's name as an image setting would be, a Dockerfile that is a regular file.
async fn devcontainer(repo: &RepoBase) -> Result<Source, SetupError> {
    let refused = |message: String| SetupError::DevContainer {
        repo: repo.name.clone(),
        message,
    };
    let bytes =
        deft_forge::private::read_file(&repo.private, &repo.commit, crate::devcontainer::PATH)
            .await?;
    if bytes.len() > 1024 * 1024 {
        return Err(refused(format!(
            "{} is over 1 MiB",
            crate::devcontainer::PATH
        )));
    }
    let text = String::from_utf8_lossy(&bytes);
    match crate::devcontainer::parse(&text).map_err(refused)? {
        crate::devcontainer::DevContainer::Image(name) => {
            deft_core::RepoEnvironment::parse(&format!("image {name}"), "image")
                .map_err(|error| refused(error.message))?;
            Ok(Source::Image(name))
        }
        crate::devcontainer::DevContainer::Build {
            context,
            dockerfile,
        } => {
            let full = if context.is_empty() {
                dockerfile.clone()
            } else {
                format!("{context}/{dockerfile}")
            };
            let files = repo.regular_among(&[full.as_str()]).await?;
            if !files.contains(&full) {
                return Err(refused(format!(
                    "its Dockerfile `{full}` is not a regular file of the repository"
                )));
            }
            if context.is_empty() {
                Ok(Source::Dockerfile(dockerfile))
            } else {
                Ok(Source::Context {
                    dir: context,
                    dockerfile,
                })
            }
        }
    }
}

/// An uncompressed tar holding one file.
fn one_file_tar(name: &str, contents: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(contents.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    builder
        .append_data(&mut header, name, contents)
        .expect("writing to memory cannot fail");
    builder.into_inner().expect("writing to memory cannot fail")
}

/// What keeps a build's network up: a sandbox under the task's network policy, and a
/// program in it whose network namespace the builder's `RUN` steps join. Its directory goes
/// with it.
#[derive(Debug)]
pub struct BuildNetworkHold {
    process: Option<deft_sandbox::SandboxProcess>,
    sandbox: Option<Box<dyn deft_sandbox::Sandbox>>,
    dir: PathBuf,
}

impl Drop for BuildNetworkHold {
    fn drop(&mut self) {
        drop(self.process.take());
        drop(self.sandbox.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A network for a build's `RUN` steps like a task's commands have: loopback, and the egress
/// proxy's bridge at `127.0.0.1:3128` deciding by `network`. Each decision goes to `events`.
pub async fn build_network(
    backend: &dyn deft_sandbox::SandboxBackend,
    workspaces: &std::path::Path,
    task: &deft_core::TaskId,
    network: deft_egress::EgressPolicy,
    events: tokio::sync::mpsc::UnboundedSender<deft_egress::ProxyEvent>,
) -> Result<(deft_images::BuildNetwork, BuildNetworkHold), deft_sandbox::SandboxError> {
    let dir = workspaces.join(format!("{}-build", task.as_str()));
    std::fs::create_dir_all(&dir).map_err(|source| deft_sandbox::SandboxError::Io {
        context: format!("making {}", dir.display()),
        source,
    })?;
    let mut hold = BuildNetworkHold {
        process: None,
        sandbox: None,
        dir: dir.clone(),
    };
    let spec = deft_sandbox::SandboxSpec {
        workspace: dir.clone(),
        state_dir: workspaces.join(format!("{}-build.sandbox", task.as_str())),
        env: Default::default(),
        secrets: Default::default(),
        network,
        resolver: deft_egress::Resolver::System,
        limits: deft_sandbox::Limits::default(),
        root: None,
    };
    let sandbox = backend.create(spec, events).await?;
    let request = deft_sandbox::ExecRequest {
        argv: vec!["sleep".into(), "86400".into()],
        ..deft_sandbox::ExecRequest::shell("")
    };
    let process = sandbox.spawn(&request, &[]).await?;
    let launcher = process.child.id();
    hold.sandbox = Some(sandbox);
    hold.process = Some(process);
    // The namespace exists once bubblewrap has made it: a few milliseconds after the start.
    let started = std::time::Instant::now();
    loop {
        if let Some(namespace) = launcher.and_then(deft_sandbox::netns::namespace_below) {
            let proxy = format!("http://127.0.0.1:{}", deft_sandbox::bwrap::PROXY_PORT);
            return Ok((deft_images::BuildNetwork::Egress { namespace, proxy }, hold));
        }
        if started.elapsed() > std::time::Duration::from_secs(10) {
            return Err(deft_sandbox::SandboxError::Start(
                "the build's network namespace never appeared".into(),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// The end of a build's output kept in the task's log.
pub fn tail(lines: &[String], keep: usize) -> String {
    let start = lines.len().saturating_sub(keep);
    let mut text = String::new();
    if start > 0 {
        text.push_str(&format!("[{start} earlier lines left out]\n"));
    }
    for line in &lines[start..] {
        text.push_str(line);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{one_file_tar, tail};

    #[test]
    fn an_images_context_is_one_dockerfile() {
        let tar = one_file_tar("Dockerfile", b"FROM node:20\n");
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<_> = archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let mut text = String::new();
                std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
                (entry.path().unwrap().display().to_string(), text)
            })
            .collect();
        assert_eq!(
            entries,
            vec![("Dockerfile".to_owned(), "FROM node:20\n".to_owned())]
        );
    }

    #[test]
    fn the_tail_says_how_much_it_left_out() {
        let lines: Vec<String> = (1..=5).map(|n| format!("line {n}")).collect();
        assert_eq!(
            tail(&lines, 2),
            "[3 earlier lines left out]\nline 4\nline 5\n"
        );
        assert_eq!(tail(&lines, 9).lines().count(), 5);
    }
}
