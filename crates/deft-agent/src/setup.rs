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

/// Looks at each repository's base for a Dockerfile.
pub async fn wanted(repos: &[RepoBase]) -> Result<Wanted, deft_forge::ForgeError> {
    let mut found: Option<(&RepoBase, String)> = None;
    let mut ignored = Vec::new();
    for repo in repos {
        let files = deft_forge::private::regular_files(&repo.private, &repo.commit, &DOCKERFILES)
            .await?;
        // In the order of DOCKERFILES, not of git's listing.
        let Some(path) = DOCKERFILES
            .iter()
            .find(|wanted| files.iter().any(|file| file == *wanted))
        else {
            continue;
        };
        match found {
            None => found = Some((repo, (*path).to_owned())),
            Some(_) => ignored.push(format!("{}/{path}", repo.name)),
        }
    }
    let Some((repo, path)) = found else {
        return Ok(Wanted::Host);
    };
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
    use super::tail;

    #[test]
    fn the_tail_says_how_much_it_left_out() {
        let lines: Vec<String> = (1..=5).map(|n| format!("line {n}")).collect();
        assert_eq!(tail(&lines, 2), "[3 earlier lines left out]\nline 4\nline 5\n");
        assert_eq!(tail(&lines, 9).lines().count(), 5);
    }
}
