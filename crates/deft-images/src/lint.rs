//! What deft refuses in a Dockerfile before a builder sees it, and the base images it names.
//!
//! The builder parses the Dockerfile itself; this reads it just far enough to refuse the
//! features that would reach past the build: `RUN` flags (`--mount` binds the builder's host
//! or caches, `--network` asks for a network, `--security` for privileges), `ADD` from a URL
//! (the builder would download it, past the sandbox's egress), and a `# syntax=` directive
//! (the builder would fetch and run a frontend image). It errs on the side of refusing:
//! heredoc bodies are read as instructions, and a `# syntax=` comment anywhere before the
//! first instruction counts, even where Docker would take it for a plain comment.

use crate::ImageError;

/// What the rest of the crate needs from a Dockerfile that passed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Dockerfile {
    /// Images the build pulls (`FROM`, `COPY --from=`), other than its own stages and
    /// `scratch`, as written.
    pub base_images: Vec<String>,
}

/// Reads `text` (the Dockerfile at `path` in the context) and refuses what deft does not build,
/// naming the line.
pub(crate) fn lint(path: &str, text: &str) -> Result<Dockerfile, ImageError> {
    let refuse = |line: usize, shown: &str, why: String| ImageError::Refused {
        reason: format!(
            "line {line} of `{path}` (`{}`): {why}",
            shorten(shown.trim())
        ),
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Builders split lines and continuations on ASCII blanks only; a character this reader
    // and the builder could see differently (a no-break space after an escape, a form feed,
    // a lone carriage return) would let an instruction hide from the checks below.
    for (index, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(odd) = line.chars().find(|c| {
            (c.is_control() && *c != '\t') || (c.is_whitespace() && !matches!(c, ' ' | '\t'))
        }) {
            return Err(refuse(
                index + 1,
                line,
                format!(
                    "the character U+{:04X} is not allowed in a Dockerfile deft builds; use plain spaces and tabs",
                    u32::from(odd)
                ),
            ));
        }
    }
    let mut escape = '\\';
    let mut dockerfile = Dockerfile::default();
    let mut stages: Vec<String> = Vec::new();
    let mut before_first_instruction = true;
    let mut directives_open = true;
    // The instruction being assembled across continuation lines: its first line and its text.
    let mut pending: Option<(usize, String)> = None;

    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim_matches([' ', '\t']);
        if pending.is_none() {
            if let Some(comment) = trimmed.strip_prefix('#') {
                if let Some((key, value)) = directive(comment) {
                    if before_first_instruction && key.eq_ignore_ascii_case("syntax") {
                        return Err(refuse(
                            number,
                            line,
                            "a `# syntax=` directive makes the builder fetch and run a \
                             frontend image; remove the line (deft builds with the \
                             builder's own Dockerfile syntax)"
                                .to_owned(),
                        ));
                    }
                    if directives_open && key.eq_ignore_ascii_case("escape") {
                        escape = match value {
                            "`" => '`',
                            "\\" => '\\',
                            other => {
                                return Err(refuse(
                                    number,
                                    line,
                                    format!(
                                        "`{other}` is not an escape character builders agree on; use `\\` or a backtick"
                                    ),
                                ));
                            }
                        };
                    }
                } else {
                    directives_open = false;
                }
                continue;
            }
            directives_open = false;
            if trimmed.is_empty() {
                continue;
            }
        } else if trimmed.is_empty() || trimmed.starts_with('#') {
            // Docker drops comment and empty lines inside a continued instruction.
            continue;
        }
        before_first_instruction = false;
        let (continues, content) = match line.trim_end_matches([' ', '\t']).strip_suffix(escape) {
            Some(content) => (true, content),
            None => (false, line),
        };
        let (start, mut joined) = pending.take().unwrap_or((number, String::new()));
        joined.push_str(content);
        if continues {
            pending = Some((start, joined));
            continue;
        }
        check_instruction(&joined, &mut dockerfile, &mut stages)
            .map_err(|why| refuse(start, &joined, why))?;
    }
    if let Some((start, joined)) = pending {
        check_instruction(&joined, &mut dockerfile, &mut stages)
            .map_err(|why| refuse(start, &joined, why))?;
    }
    Ok(dockerfile)
}

/// A parser directive's key and value (`# key=value`, the `#` already removed).
fn directive(comment: &str) -> Option<(&str, &str)> {
    let (key, value) = comment.split_once('=')?;
    let key = key.trim();
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    valid.then_some((key, value.trim()))
}

/// Checks one whole instruction; the error is why it is refused.
fn check_instruction(
    instruction: &str,
    dockerfile: &mut Dockerfile,
    stages: &mut Vec<String>,
) -> Result<(), String> {
    let instruction = instruction.trim_start();
    let (keyword, rest) = instruction
        .split_once(char::is_whitespace)
        .unwrap_or((instruction, ""));
    let rest = rest.trim_start();
    match keyword.to_ascii_uppercase().as_str() {
        "ONBUILD" => check_instruction(rest, dockerfile, stages),
        "RUN" => check_run(rest),
        "ADD" => check_add(rest),
        "FROM" => {
            let words: Vec<&str> = rest
                .split_whitespace()
                .filter(|word| !word.starts_with("--"))
                .collect();
            if let Some(image) = words.first() {
                if image.contains('$') {
                    return Err(format!(
                        "`FROM {image}` names its base image through a variable; write the image's name, since deft checks base images before it builds"
                    ));
                }
                note_image(image, dockerfile, stages);
            }
            if let [_, as_word, name, ..] = words.as_slice()
                && as_word.eq_ignore_ascii_case("as")
            {
                stages.push(name.to_ascii_lowercase());
            }
            Ok(())
        }
        "COPY" => {
            for flag in flags(rest) {
                if let Some(from) = flag.strip_prefix("--from=") {
                    let is_stage_number = from.chars().all(|c| c.is_ascii_digit());
                    if !is_stage_number {
                        note_image(from, dockerfile, stages);
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn check_run(rest: &str) -> Result<(), String> {
    let Some(flag) = flags(rest).next() else {
        return Ok(());
    };
    let name = flag.split_once('=').map_or(flag, |(name, _)| name);
    Err(match name {
        "--mount" => "`RUN --mount` is not supported: RUN steps get no mounts (no binds of the \
                      builder's files, caches or secrets); COPY what the step needs into the \
                      image first"
            .to_owned(),
        "--network" => "`RUN --network` is not supported: RUN steps have no network in this \
                        version; put what the step downloads in the repository and COPY it"
            .to_owned(),
        "--security" => "`RUN --security` is not supported: RUN steps never get extra \
                         privileges; remove the flag"
            .to_owned(),
        other => format!("`RUN {other}` is not supported; remove the flag"),
    })
}

fn check_add(rest: &str) -> Result<(), String> {
    let words = arguments(rest);
    let Some((_destination, sources)) = words.split_last() else {
        return Ok(());
    };
    match sources.iter().find(|source| is_remote(source)) {
        Some(source) => Err(format!(
            "`ADD {source}` may download during the build (a URL, or a variable or quoting \
             that could become one), and the builder's downloads bypass the task's network \
             policy; put the file in the repository and COPY it"
        )),
        None => Ok(()),
    }
}

/// Whether the builder could take `source` for something to download. The builder expands
/// variables and drops quotes and escapes before it decides, so anything that could become a
/// URL or a `host:path` after that counts.
fn is_remote(source: &str) -> bool {
    source.contains([':', '$', '"', '\'', '\\', '`']) || source.starts_with("git@")
}

/// The leading `--flag` words of an instruction's arguments.
fn flags(rest: &str) -> impl Iterator<Item = &str> {
    rest.split_whitespace()
        .take_while(|word| word.starts_with("--"))
}

/// The arguments after the flags, in shell form or JSON form.
fn arguments(rest: &str) -> Vec<String> {
    let mut remaining = rest.trim_start();
    while remaining.starts_with("--") {
        let end = remaining
            .find(char::is_whitespace)
            .unwrap_or(remaining.len());
        remaining = remaining[end..].trim_start();
    }
    if remaining.starts_with('[')
        && let Ok(words) = serde_json::from_str::<Vec<String>>(remaining)
    {
        return words;
    }
    remaining.split_whitespace().map(str::to_owned).collect()
}

fn note_image(image: &str, dockerfile: &mut Dockerfile, stages: &[String]) {
    let lowered = image.to_ascii_lowercase();
    if lowered == "scratch"
        || stages.contains(&lowered)
        || dockerfile.base_images.iter().any(|known| known == image)
    {
        return;
    }
    dockerfile.base_images.push(image.to_owned());
}

fn shorten(line: &str) -> String {
    const MAX: usize = 80;
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `expect` is `Ok(base images)` or `Err(a part of the refusal)`.
    fn check(dockerfile: &str, expect: Result<&[&str], &str>) {
        let got = lint("Dockerfile", dockerfile);
        match (got, expect) {
            (Ok(got), Ok(images)) => assert_eq!(got.base_images, images, "{dockerfile}"),
            (Err(ImageError::Refused { reason }), Err(part)) => {
                assert!(reason.contains(part), "{reason:?} lacks {part:?}")
            }
            (got, expect) => panic!("{dockerfile}\n got {got:?}\n expected {expect:?}"),
        }
    }

    #[test]
    fn plain_dockerfiles_pass_and_name_their_base_images() {
        check(
            "FROM debian:12\nRUN apt-get install -y curl\n",
            Ok(&["debian:12"]),
        );
        check(
            "FROM --platform=linux/amd64 rust:1 AS build\nRUN cargo build\n\
             FROM debian:12\nCOPY --from=build /a /a\nCOPY --from=0 /b /b\n",
            Ok(&["rust:1", "debian:12"]),
        );
        check(
            "FROM scratch\nCOPY --from=busybox:1 /bin/sh /sh\n",
            Ok(&["busybox:1"]),
        );
        check("from alpine as Base\nfrom base\n", Ok(&["alpine"]));
        check(
            "# a comment\n\nFROM a\n# syntax=late is a comment\n",
            Ok(&["a"]),
        );
        check(
            "FROM a\nADD ./file.tar /srv/\nADD [\"x\", \"/y\"]\n",
            Ok(&["a"]),
        );
    }

    #[test]
    fn run_flags_are_refused_naming_the_line() {
        check(
            "FROM a\nRUN --mount=type=bind,source=/,target=/host true\n",
            Err(
                "line 2 of `Dockerfile` (`RUN --mount=type=bind,source=/,target=/host true`): `RUN --mount`",
            ),
        );
        check(
            "FROM a\nRUN --network=host curl x\n",
            Err("line 2 of `Dockerfile`"),
        );
        check("FROM a\nRUN --network=host curl x\n", Err("no network"));
        check(
            "FROM a\nRUN --security=insecure true\n",
            Err("`RUN --security`"),
        );
        check("FROM a\nrun --device=x true\n", Err("`RUN --device`"));
        check(
            "FROM a\nONBUILD RUN --mount=type=cache,target=/c true\n",
            Err("`RUN --mount`"),
        );
    }

    #[test]
    fn continuations_are_joined_and_the_first_line_named() {
        check(
            "FROM a\nRUN \\\n  # a comment inside\n\n  --mount=type=ssh true\n",
            Err("line 2 of"),
        );
        check(
            "# escape=`\nFROM a\nRUN `\n --network=none true\n",
            Err("line 3 of"),
        );
        // With the backtick escape, a backslash ends nothing.
        check("# escape=`\nFROM a\nRUN echo \\\nRUN true\n", Ok(&["a"]));
    }

    #[test]
    fn a_syntax_directive_is_refused() {
        check("# syntax=docker/dockerfile:1\nFROM a\n", Err("line 1 of"));
        check(
            "#Syntax = docker/dockerfile:1.4\nFROM a\n",
            Err("`# syntax=`"),
        );
        check(
            "\u{feff}# check=skip=all\n\n# syntax=x\nFROM a\n",
            Err("line 3 of"),
        );
    }

    /// An instruction hidden behind a continuation the builder does not see, from the
    /// review: a no-break space after the escape made this reader join the next line.
    #[test]
    fn characters_builders_read_differently_are_refused() {
        for odd in ['\u{a0}', '\u{c}', '\u{b}', '\u{85}', '\u{2028}', '\u{3000}'] {
            let text = format!(
                "FROM a\nRUN echo one \\{odd}\nRUN --mount=type=bind,from=s,source=/,target=/h,rw true\n"
            );
            check(&text, Err("is not allowed in a Dockerfile"));
        }
        check(
            "# escape=` x\nFROM a\nRUN echo `\n  --mount=x\n",
            Err("is not an escape character"),
        );
        check("FROM a\r\nRUN echo hi\r\n", Ok(&["a"]));
        check("FROM a\nRUN echo \rhidden\n", Err("U+000D"));
        check("FROM a\nRUN echo one \\ \t\n  two\n", Ok(&["a"]));
    }

    #[test]
    fn add_from_a_url_is_refused() {
        check(
            "FROM a\nADD https://example.test/x.tgz /x\n",
            Err("may download during the build"),
        );
        // What the builder turns into a URL after expanding and unquoting.
        for hidden in [
            "FROM a\nARG U=http://127.0.0.1:1/s\nADD ${U} /x\n",
            "FROM a\nADD ht\"tp:\"//127.0.0.1:1/s /y\n",
            "FROM a\nADD http:\\/\\/127.0.0.1:1/s /z\n",
            "FROM a\nONBUILD ADD $U /z\n",
        ] {
            check(hidden, Err("may download during the build"));
        }
        check("FROM a\nADD vendor.tar.gz lib/ /opt/\n", Ok(&["a"]));
        check(
            "FROM a\nADD --chmod=644 [\"git@example.test:x.git\", \"/x\"]\n",
            Err("`ADD git@"),
        );
    }
}
