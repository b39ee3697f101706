//! The files a task's description names, found in a repository's listing: the planner reads
//! them in its first request, so that a plan is made after looking at the code it changes.

/// The most files read for the planner.
pub const NAMED_FILES: usize = 4;
/// The most of each file the planner reads.
pub const NAMED_BYTES: usize = 8 * 1024;

/// The paths of `files` (a repository's regular files) that `description` names, by path or
/// by a name only one file has, in the order named; then a test file of each, when one is
/// named after it (`test_util.py`, `util.test.js`); at most [`NAMED_FILES`].
pub fn named_in(description: &str, files: &[String]) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let words = description.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '`' | '"' | '\'' | '(' | ')' | ',' | ';' | '<' | '>' | '[' | ']' | '*'
            )
    });
    for word in words {
        let word = word
            .trim_end_matches(['.', ':', '!', '?'])
            .trim_start_matches("./");
        if word.len() < 3 || word.len() > 200 || !(word.contains('.') || word.contains('/')) {
            continue;
        }
        let suffix = format!("/{word}");
        let matching: Vec<&String> = files
            .iter()
            .filter(|file| *file == word || file.ends_with(&suffix))
            .collect();
        if let [file] = matching.as_slice()
            && !found.contains(file)
        {
            found.push((*file).clone());
        }
    }
    let mut tests = Vec::new();
    for file in &found {
        let name = file.rsplit('/').next().unwrap_or(file);
        let stem = name.split('.').next().unwrap_or(name);
        if stem.is_empty() || stem.contains("test") {
            continue;
        }
        let test = files.iter().find(|candidate| {
            let base = candidate.rsplit('/').next().unwrap_or(candidate);
            base != name
                && (base.starts_with(&format!("test_{stem}."))
                    || base.starts_with(&format!("{stem}_test."))
                    || base.starts_with(&format!("{stem}.test."))
                    || base.starts_with(&format!("{stem}.spec.")))
        });
        if let Some(test) = test
            && !found.contains(test)
            && !tests.contains(test)
        {
            tests.push(test.clone());
        }
    }
    found.extend(tests);
    found.truncate(NAMED_FILES);
    found
}

/// `bytes` as text for the planner: at most [`NAMED_BYTES`], cut at a character, saying so.
pub fn shown(bytes: &[u8]) -> Option<String> {
    if bytes.contains(&0) {
        return None;
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(NAMED_BYTES)]).into_owned();
    Some(if bytes.len() > NAMED_BYTES {
        format!("{text}\n[… cut at {NAMED_BYTES} of {} bytes]", bytes.len())
    } else {
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<String> {
        [
            "README.md",
            "src/util.py",
            "tests/test_util.py",
            "lib/greet.js",
            "lib/greet.test.js",
            "a/config.py",
            "b/config.py",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    #[test]
    fn a_file_named_by_path_or_unique_name_is_found_with_its_test() {
        assert_eq!(
            named_in("Fix the off-by-one in `util.py`.", &files()),
            ["src/util.py", "tests/test_util.py"]
        );
        assert_eq!(
            named_in("lib/greet.js should greet in French", &files()),
            ["lib/greet.js", "lib/greet.test.js"]
        );
    }

    #[test]
    fn a_name_two_files_share_or_none_has_is_not_guessed() {
        assert!(named_in("Change config.py so that it reads TOML", &files()).is_empty());
        assert!(named_in("Make main.rs print hello", &files()).is_empty());
        assert_eq!(
            named_in("Change a/config.py, e.g. the port", &files()),
            ["a/config.py"]
        );
    }

    #[test]
    fn long_files_are_cut_and_binary_ones_left_out() {
        let long = vec![b'x'; NAMED_BYTES + 10];
        assert!(
            shown(&long)
                .unwrap()
                .ends_with(&format!("of {} bytes]", NAMED_BYTES + 10))
        );
        assert_eq!(shown(b"\0ELF"), None);
    }
}
