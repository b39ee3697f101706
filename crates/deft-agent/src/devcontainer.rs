//! A repository's `.devcontainer/devcontainer.json`, as far as deft uses it: the image it
//! names, or the Dockerfile and build context it builds. The file is JSON with comments and
//! trailing commas (the Dev Containers specification's JSONC), read from git's objects.

/// Where the file is looked for.
pub const PATH: &str = ".devcontainer/devcontainer.json";

/// What a devcontainer.json asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevContainer {
    /// `"image"`: a public image as it is.
    Image(String),
    /// `"build"`: a Dockerfile inside a context, both as paths from the repository's root
    /// (`context` empty for the root itself).
    Build { context: String, dockerfile: String },
}

/// Reads the file; a message saying what is wrong when deft cannot use it.
pub fn parse(text: &str) -> Result<DevContainer, String> {
    let value: serde_json::Value = serde_json::from_str(&strip_jsonc(text))
        .map_err(|error| format!("{PATH} is not JSON with comments ({error})"))?;
    let build = &value["build"];
    let dockerfile = build["dockerfile"]
        .as_str()
        .or_else(|| build["dockerFile"].as_str())
        .or_else(|| value["dockerFile"].as_str());
    if let Some(dockerfile) = dockerfile {
        // Both relative to the folder of devcontainer.json.
        let context = build["context"]
            .as_str()
            .or_else(|| value["context"].as_str())
            .unwrap_or(".");
        let context = resolve(".devcontainer", context)?;
        let dockerfile = resolve(".devcontainer", dockerfile)?;
        let inside = match context.as_str() {
            "" => Some(dockerfile.as_str()),
            dir => dockerfile
                .strip_prefix(dir)
                .and_then(|rest| rest.strip_prefix('/')),
        };
        let Some(inside) = inside else {
            return Err(format!(
                "{PATH}'s Dockerfile `{dockerfile}` is outside its build context `{context}`; deft sends the builder the context alone"
            ));
        };
        return Ok(DevContainer::Build {
            dockerfile: inside.to_owned(),
            context,
        });
    }
    match value["image"].as_str() {
        Some(image) => Ok(DevContainer::Image(image.to_owned())),
        None => Err(format!(
            "{PATH} names neither `image` nor `build.dockerfile` (Docker Compose files are not used)"
        )),
    }
}

/// `path` relative to `base`, both inside the repository, as a path from its root without
/// `.` or `..` parts; refused when it leaves the repository or is absolute.
fn resolve(base: &str, path: &str) -> Result<String, String> {
    if path.starts_with('/') {
        return Err(format!(
            "`{path}` in {PATH} is absolute; give a path inside the repository"
        ));
    }
    let mut parts: Vec<&str> = base.split('/').filter(|part| !part.is_empty()).collect();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("`{path}` in {PATH} leaves the repository"));
                }
            }
            part => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// JSON from JSONC: comments dropped, and a comma before a closing bracket.
fn strip_jsonc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => {
                    if let Some(next) = chars.next() {
                        out.push(next);
                    }
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    drop_trailing_commas(&out)
}

fn drop_trailing_commas(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            out.push(c);
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        if matches!(c, '}' | ']') {
            let kept = out.trim_end().len();
            if out[..kept].ends_with(',') {
                out.truncate(kept - 1);
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{DevContainer, parse};

    #[test]
    fn an_image_or_a_build_is_read_from_jsonc() {
        let image = parse(
            r#"// made by a template
            {
              "name": "app", /* the image */
              "image": "mcr.microsoft.com/devcontainers/base:bookworm",
              "features": {"x": {},},
            }"#,
        )
        .unwrap();
        assert_eq!(
            image,
            DevContainer::Image("mcr.microsoft.com/devcontainers/base:bookworm".into())
        );
        let build = parse(r#"{"build": {"dockerfile": "Dockerfile", "context": ".."}}"#).unwrap();
        assert_eq!(
            build,
            DevContainer::Build {
                context: String::new(),
                dockerfile: ".devcontainer/Dockerfile".into()
            }
        );
        let local = parse(r#"{"build": {"dockerfile": "dev.Dockerfile"}}"#).unwrap();
        assert_eq!(
            local,
            DevContainer::Build {
                context: ".devcontainer".into(),
                dockerfile: "dev.Dockerfile".into()
            }
        );
        let url = parse(r#"{"image": "a//b", "x": "http://not-a-comment"}"#).unwrap();
        assert_eq!(url, DevContainer::Image("a//b".into()));
    }

    #[test]
    fn paths_out_of_the_repository_or_the_context_are_refused() {
        for text in [
            r#"{"build": {"dockerfile": "Dockerfile", "context": "../.."}}"#,
            r#"{"build": {"dockerfile": "/etc/passwd"}}"#,
            r#"{"build": {"dockerfile": "../Dockerfile"}}"#,
            r#"{"dockerComposeFile": "compose.yml"}"#,
            "not json",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }
}
