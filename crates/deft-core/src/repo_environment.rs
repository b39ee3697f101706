//! What a repository's tasks run on, as its owner chose it: found from the repository
//! (`auto`), a Dockerfile at another path, a public image, or the host's tools.

use std::fmt;

use crate::ValidationError;

/// A repository's environment setting. Written as `auto`, `host`, `dockerfile PATH` or
/// `image NAME`, the same in the API, the CLI and the store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RepoEnvironment {
    /// Its `Dockerfile` (or `.deft/Dockerfile`) when it has one, else the host's tools.
    #[default]
    Auto,
    /// The Dockerfile at this path of the repository.
    Dockerfile(String),
    /// A public image, used as it is (built as `FROM NAME`).
    Image(String),
    /// The host's tools, whatever the repository holds.
    Host,
}

/// The longest path or image name accepted.
const MAX_LENGTH: usize = 256;

impl RepoEnvironment {
    /// Reads the written form, naming `field` in what to fix.
    pub fn parse(text: &str, field: &str) -> Result<RepoEnvironment, ValidationError> {
        let text = text.trim();
        let (kind, rest) = match text.split_once(char::is_whitespace) {
            Some((kind, rest)) => (kind, rest.trim()),
            None => (text, ""),
        };
        let bad = |message: String| Err(ValidationError::new(field, message));
        match (kind, rest) {
            ("auto", "") => Ok(RepoEnvironment::Auto),
            ("host", "") => Ok(RepoEnvironment::Host),
            ("dockerfile", path) if !path.is_empty() => {
                if path.len() > MAX_LENGTH {
                    return bad(format!("the path is over {MAX_LENGTH} characters"));
                }
                let parts: Vec<&str> = path.split('/').collect();
                if path.starts_with('/')
                    || parts
                        .iter()
                        .any(|part| part.is_empty() || *part == "." || *part == "..")
                    || path.chars().any(char::is_control)
                {
                    return bad(format!(
                        "`{path}` must be a path inside the repository such as `docker/dev.Dockerfile` (no leading `/`, no `.` or `..` parts)"
                    ));
                }
                Ok(RepoEnvironment::Dockerfile(path.to_owned()))
            }
            ("image", name) if !name.is_empty() => {
                if name.len() > MAX_LENGTH
                    || !name.chars().all(|c| {
                        c.is_ascii_lowercase()
                            || c.is_ascii_digit()
                            || matches!(c, '.' | '/' | ':' | '@' | '_' | '-')
                    })
                    || name.starts_with(['-', '.', '/', ':', '@'])
                {
                    return bad(format!(
                        "`{name}` is not an image name; give one such as `node:20-bookworm` or `ghcr.io/owner/image:tag` (lower case, at most {MAX_LENGTH} characters)"
                    ));
                }
                Ok(RepoEnvironment::Image(name.to_owned()))
            }
            _ => bad(format!(
                "`{}` is not an environment; use `auto`, `host`, `dockerfile PATH` or `image NAME`",
                text.chars().take(80).collect::<String>()
            )),
        }
    }
}

impl fmt::Display for RepoEnvironment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoEnvironment::Auto => f.write_str("auto"),
            RepoEnvironment::Host => f.write_str("host"),
            RepoEnvironment::Dockerfile(path) => write!(f, "dockerfile {path}"),
            RepoEnvironment::Image(name) => write!(f, "image {name}"),
        }
    }
}

impl serde::Serialize for RepoEnvironment {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::RepoEnvironment;

    #[test]
    fn each_form_reads_back_as_it_is_written() {
        for text in [
            "auto",
            "host",
            "dockerfile docker/dev.Dockerfile",
            "image node:20-bookworm",
            "image ghcr.io/owner/image@sha256:abc",
        ] {
            let parsed = RepoEnvironment::parse(text, "environment").unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(
            RepoEnvironment::parse("  dockerfile   Dockerfile.dev ", "environment").unwrap(),
            RepoEnvironment::Dockerfile("Dockerfile.dev".into())
        );
    }

    #[test]
    fn bad_settings_name_the_field_and_the_fix() {
        for text in [
            "",
            "docker",
            "dockerfile",
            "dockerfile /etc/passwd",
            "dockerfile ../outside/Dockerfile",
            "dockerfile a//b",
            "image",
            "image UPPER",
            "image -rf",
            "host now",
        ] {
            let error = RepoEnvironment::parse(text, "environment").unwrap_err();
            assert_eq!(error.field, "environment", "{text}");
            assert!(!error.message.is_empty());
        }
        let long = format!("dockerfile {}", "a".repeat(300));
        assert!(
            RepoEnvironment::parse(&long, "environment")
                .unwrap_err()
                .message
                .contains("256")
        );
    }
}
