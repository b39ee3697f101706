//! The one error of this crate. Each variant is something a caller acts on differently, and
//! each message says what happened and what to do next, so it can be shown to the task's owner
//! (or to the operator, for `Unavailable` and `Io`) as it is.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Nothing answers the Engine API at the socket: the operator has to start a builder.
    #[error(
        "no image builder answers at `{}` ({reason}); start one with \
         `podman system service --time=0 unix://{}`, or point deft at Docker's socket",
        .socket.display(),
        .socket.display()
    )]
    Unavailable { socket: PathBuf, reason: String },

    /// The Dockerfile or the build context uses something deft does not build.
    #[error("deft does not build this: {reason}")]
    Refused { reason: String },

    /// A base image could not be pulled without credentials, and deft never sends any.
    #[error(
        "the base image `{image}` needs credentials to pull, and only public images are \
         supported; use a public base image in the Dockerfile"
    )]
    PrivateImage { image: String },

    /// The builder ran the Dockerfile and it failed; the lines are the builder's own.
    #[error(
        "the image build failed; fix the Dockerfile (or what it runs) and try again. \
         The builder's last lines:\n{last_lines}"
    )]
    BuildFailed { last_lines: String },

    /// The builder answered, but not as expected, outside the build itself.
    #[error(
        "the image builder could not {action}: {message}; check the builder's own log \
         (the output of `podman system service`)"
    )]
    Builder {
        action: &'static str,
        message: String,
    },

    /// The image's root filesystem could not be unpacked into the cache.
    #[error("cannot unpack the image into `{}`: {reason}", .path.display())]
    Unpack { path: PathBuf, reason: String },

    /// The image cache on disk could not be read or written.
    #[error(
        "cannot use `{}` of the image cache: {source}; check that deft's user can write \
         the cache directory and that its disk has room",
        .path.display()
    )]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
        move |source| ImageError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Sorts a failed Engine API call: no builder at all, or a builder that refused.
    pub(crate) fn from_api(
        socket: &Path,
        action: &'static str,
        error: bollard::errors::Error,
    ) -> ImageError {
        use bollard::errors::Error;
        let unavailable = |reason: String| ImageError::Unavailable {
            socket: socket.to_owned(),
            reason,
        };
        match error {
            Error::SocketNotFoundError(_) => unavailable("no socket there".to_owned()),
            Error::RequestTimeoutError => ImageError::Builder {
                action,
                message: "it did not answer in time".to_owned(),
            },
            Error::DockerResponseServerError {
                status_code,
                message,
            } => ImageError::Builder {
                action,
                message: format!("{} (HTTP {status_code})", message.trim()),
            },
            other => match connection_failure(&other) {
                Some(reason) => unavailable(reason),
                None => ImageError::Builder {
                    action,
                    message: other.to_string(),
                },
            },
        }
    }
}

/// The reason, when an error is the socket refusing or missing rather than the API answering.
fn connection_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused
                | io::ErrorKind::NotFound
                | io::ErrorKind::PermissionDenied
                | io::ErrorKind::ConnectionReset => return Some(io.to_string()),
                _ => {}
            }
        }
        current = error.source();
    }
    None
}
