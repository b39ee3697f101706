//! Edits written as code in a model's reply, for models that cannot put code into a tool
//! call's JSON (`[model] edit_format = "code_blocks"`): a file's path, then a fenced block with
//! the whole file or the whole definitions that change. Small local models write code this way
//! unasked; what they cannot do is escape it inside a JSON string, or copy an `old_str` exactly.
//!
//! Pure text in, text out: the engine reads and writes the files through the editor, so every
//! path rule of the workspace holds.

/// One fenced block of a reply, with the file names written before it (nearest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block {
    pub names: Vec<String>,
    /// The fence's language (`python`, `sh`), lower case; empty when it names none.
    pub lang: String,
    /// The name on the line just above the block (or in its fence, or on its own first
    /// line), as the prompt asks a path to be written: the one name that may make a new file
    /// the task does not name.
    pub heading: Option<String>,
    /// The block's first line when it named the file (`# app.py`) and was taken out of the
    /// body: put back if the file itself begins with it.
    pub named_by: Option<String>,
    pub body: String,
}

impl Block {
    /// Whether the block is a shell session rather than a file's text: what a model writes
    /// for a command it means to run.
    pub fn is_shell(&self) -> bool {
        matches!(
            self.lang.as_str(),
            "sh" | "bash" | "shell" | "console" | "zsh"
        )
    }
}

/// A fence line: its character, its length and its info string.
fn fence_of(line: &str) -> Option<(char, usize, &str)> {
    let line = line.trim();
    let mark = line.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let length = line.chars().take_while(|c| *c == mark).count();
    (length >= 3).then(|| (mark, length, line[length..].trim()))
}

/// The fenced blocks of `reply`; a block's names are those in the text between it and the
/// block before, so that a path belongs to the code written under it. As in CommonMark, only
/// a bare fence closes a block: the ```` ```sh ```` a small model opens again inside its block
/// stays in it, and is taken apart by [`split_inner`].
pub(crate) fn blocks(reply: &str) -> Vec<Block> {
    let mut found = Vec::new();
    let mut prose = String::new();
    let mut code: Option<(char, usize, Vec<&str>)> = None;
    let mut lang = String::new();
    let mut heading = None;
    for line in reply.lines() {
        let fence = fence_of(line);
        match (code.as_mut(), fence) {
            (None, Some((mark, length, info))) => {
                // The fence's info string may be the path itself: ```src/app.py
                lang = info.to_lowercase();
                let above = prose.lines().rev().find(|line| !line.trim().is_empty());
                heading = names_in(info)
                    .into_iter()
                    .next()
                    .or_else(|| above.and_then(|line| names_in(line).into_iter().next()));
                prose.push('\n');
                prose.push_str(info);
                code = Some((mark, length, Vec::new()));
            }
            (None, None) => {
                prose.push('\n');
                prose.push_str(line);
            }
            (Some((mark, length, _)), Some((closing, count, "")))
                if closing == *mark && count >= *length =>
            {
                let (_, _, lines) = code.take().expect("inside a block");
                let names = names_in(&prose);
                for part in split_inner(&lines) {
                    let mut names = names.clone();
                    if let Some(name) = &part.name {
                        names.retain(|known| known != name);
                        names.insert(0, name.clone());
                    }
                    if !part.body.trim().is_empty() {
                        found.push(Block {
                            heading: part.name.or_else(|| heading.clone()),
                            names,
                            lang: part.lang.unwrap_or_else(|| lang.clone()),
                            named_by: part.named_by,
                            body: part.body,
                        });
                    }
                }
                heading = None;
                lang.clear();
                prose.clear();
            }
            (Some((_, _, lines)), _) => lines.push(line),
        }
    }
    found
}

/// A part of a block: what one file's name inside it heads.
struct Part {
    name: Option<String>,
    named_by: Option<String>,
    lang: Option<String>,
    body: String,
}

/// Takes a block apart where a line naming a file heads code: its own first line (`#
/// app.py`, `// lib/math.js`, `$ cat app.py`), or a name followed by a fence opened inside
/// the block, as small models nest them. The inner fences go; so does a name line that heads
/// the whole block.
fn split_inner(lines: &[&str]) -> Vec<Part> {
    let mut parts = vec![Part {
        name: None,
        named_by: None,
        lang: None,
        body: String::new(),
    }];
    let mut at = 0;
    let mut first = true;
    while at < lines.len() {
        let line = lines[at];
        let next_is_fence = lines.get(at + 1).and_then(|next| fence_of(next)).is_some();
        // A lone line is the block's whole text (`./test.sh` to run), not a heading.
        let heads =
            next_is_fence || (first && lines[at + 1..].iter().any(|l| !l.trim().is_empty()));
        if let Some(name) = path_line(line).filter(|_| heads) {
            let lang = lines
                .get(at + 1)
                .and_then(|next| fence_of(next))
                .map(|(_, _, info)| info.to_lowercase())
                .filter(|info| !info.is_empty());
            let part = Part {
                name: Some(name),
                named_by: Some(line.to_owned()),
                lang,
                body: String::new(),
            };
            if first {
                parts[0] = part;
            } else {
                parts.push(part);
            }
            at += if next_is_fence { 2 } else { 1 };
            first = false;
            continue;
        }
        first = false;
        if fence_of(line).is_some() {
            // An inner fence, opened or closed: no line of a file.
            at += 1;
            continue;
        }
        let body = &mut parts.last_mut().expect("one part at least").body;
        if !body.is_empty() {
            body.push('\n');
        }
        body.push_str(line);
        at += 1;
    }
    parts
}

/// The file a line names when it names nothing else, as models head a block with it:
/// `app.py`, `# app.py`, `// lib/math.js`, `File: app.py`, `$ cat app.py`.
fn path_line(line: &str) -> Option<String> {
    let mut rest = line.trim();
    for mark in ["<!--", "/*", "//", "#", "--", ";", "$", ">"] {
        if let Some(after) = rest.strip_prefix(mark) {
            rest = after.trim_start();
            break;
        }
    }
    for word in ["File:", "file:", "Filename:", "filename:", "cat "] {
        if let Some(after) = rest.strip_prefix(word) {
            rest = after.trim_start();
        }
    }
    let rest = rest
        .trim_end_matches("-->")
        .trim_end_matches("*/")
        .trim()
        .trim_end_matches(':')
        .trim_matches(|c: char| "`'\"*".contains(c));
    let [name] = names_in(rest).try_into().ok()?;
    let bare = rest
        .strip_prefix("/workspace/")
        .or_else(|| rest.strip_prefix("./"))
        .unwrap_or(rest);
    (bare == name).then_some(name)
}

/// The file names in `text`, the last one first: words with an extension, stripped of the
/// quotes and marks around them, relative to the workspace; none that climbs out of it.
pub(crate) fn names_in(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for word in text.split(|c: char| c.is_whitespace() || "`'\"*,;:()[]<>".contains(c)) {
        let word = word.trim_end_matches(['.', '!', '?']);
        let word = word.strip_prefix("/workspace/").unwrap_or(word);
        let word = word.strip_prefix("./").unwrap_or(word);
        let Some((stem, extension)) = word.rsplit_once('.') else {
            continue;
        };
        let plausible = !stem.is_empty()
            && !word.chars().all(|c| c.is_ascii_digit() || c == '.')
            && !extension.is_empty()
            && extension.len() <= 8
            && extension.chars().all(|c| c.is_ascii_alphanumeric())
            && word
                .chars()
                .all(|c| c.is_alphanumeric() || "._-/".contains(c))
            && !word.starts_with('/')
            && !word.split('/').any(|part| part == ".." || part.is_empty());
        if plausible {
            // A name written again is as near as its last mention.
            names.retain(|name| name != word);
            names.push(word.to_owned());
        }
    }
    names.reverse();
    names
}

/// How a block was put into its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Merged {
    /// The block is the whole file: it holds most of the file's lines.
    Whole(String),
    /// Nothing in the block places it, but it is about as long as the file: the file
    /// rewritten, a guess that a file the block's lines match beats.
    Rewrite(String),
    /// The block's definitions replaced theirs in the file (and new ones went beside them).
    Definitions { text: String, replaced: Vec<String> },
}

impl Merged {
    pub fn text(&self) -> &str {
        match self {
            Merged::Whole(text) | Merged::Rewrite(text) | Merged::Definitions { text, .. } => text,
        }
    }
}

/// Puts `body` into `original`: as the whole file when it holds most of the file's lines,
/// else each of its top-level definitions in place of the one that begins with the same line;
/// a new definition goes before the next one placed (or after the last). An error says why
/// the block could not be placed, for the model to write it otherwise.
pub(crate) fn merge(original: &str, body: &str) -> Result<Merged, String> {
    let kept: Vec<&str> = original.lines().filter(|l| !l.trim().is_empty()).collect();
    let in_body = |line: &str| body.lines().any(|b| b.trim() == line.trim());
    let present = kept.iter().filter(|line| in_body(line)).count();
    let starts_alike = kept.first().is_some_and(|first| in_body(first));
    let about_as_long = body.lines().count() * 5 >= original.lines().count() * 3;
    if kept.is_empty()
        || present * 5 >= kept.len() * 4
        || (starts_alike && (present * 2 >= kept.len() || about_as_long))
    {
        return Ok(Merged::Whole(with_newline(body)));
    }
    match definitions(original, body) {
        Ok(merged) => Ok(merged),
        // Nothing in it places it, and it is about as long as the file: the file rewritten.
        Err(_) if about_as_long => Ok(Merged::Rewrite(with_newline(body))),
        Err(why) => Err(why),
    }
}

fn with_newline(text: &str) -> String {
    format!("{}\n", text.trim_end_matches('\n'))
}

fn definitions(original: &str, body: &str) -> Result<Merged, String> {
    let mut file: Vec<String> = original.lines().map(str::to_owned).collect();
    let body: Vec<&str> = body.lines().collect();
    let mut replaced = Vec::new();
    // New definitions wait for the next one placed, to go before it.
    let mut waiting: Vec<Vec<String>> = Vec::new();
    let mut after_last: Option<usize> = None;
    for chunk in chunks(&body) {
        let Some(header) = chunk.iter().position(|l| !l.trim().is_empty() && !leads(l)) else {
            continue;
        };
        let first = chunk[header].trim();
        let hits: Vec<usize> = (0..file.len())
            .filter(|&i| file[i].trim() == first)
            .collect();
        match hits.as_slice() {
            [] => {
                let mut new = rebased(&chunk, header, None);
                new.push(String::new());
                waiting.push(new);
            }
            [at] => {
                let at = *at;
                let pad = indent(&file[at]);
                let mut start = at;
                if header > 0 {
                    // The block brings its own comments: they replace the file's.
                    while start > 0 && leads(&file[start - 1]) && !file[start - 1].trim().is_empty()
                    {
                        start -= 1;
                    }
                }
                let end = extent(&file, at);
                let mut new: Vec<String> = waiting.drain(..).flatten().collect();
                new.extend(rebased(&chunk, header, Some(pad)));
                let added = new.len();
                file.splice(start..end, new);
                after_last = Some(start + added);
                replaced.push(first.to_owned());
            }
            _ => {
                return Err(format!(
                    "the line `{first}` is in the file more than once; write the whole file"
                ));
            }
        }
    }
    if replaced.is_empty() {
        let first = body
            .iter()
            .find(|l| !l.trim().is_empty())
            .map_or("", |l| l.trim());
        return Err(format!(
            "no definition in it begins with a line of the file (`{first}` is not in it); write the whole file, or whole functions as the file has them"
        ));
    }
    if !waiting.is_empty() {
        let at = after_last.expect("a definition was placed");
        let mut new = vec![String::new()];
        new.extend(waiting.drain(..).flatten());
        new.pop();
        file.splice(at..at, new);
    }
    Ok(Merged::Definitions {
        text: with_newline(&file.join("\n")),
        replaced,
    })
}

/// Lines that belong to the definition under them: comments, doc comments, attributes,
/// decorators.
fn leads(line: &str) -> bool {
    let line = line.trim_start();
    ["#", "//", "/*", "* ", "*/", "@"]
        .iter()
        .any(|lead| line.starts_with(lead))
        && !line.starts_with("#!")
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Lines that close what the line above opened, at its indent.
fn closes(line: &str) -> bool {
    let line = line.trim_start();
    ["}", ")", "]", "end", "fi", "done", "esac"]
        .iter()
        .any(|closer| line.starts_with(closer))
}

/// The top-level pieces of a block: each begins at a line of the block's least indent (its
/// comments and attributes with it), and runs to the next.
fn chunks<'b>(body: &[&'b str]) -> Vec<Vec<&'b str>> {
    let base = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| indent(l))
        .min()
        .unwrap_or(0);
    let mut chunks: Vec<Vec<&str>> = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for &line in body {
        let starts = !line.trim().is_empty()
            && indent(line) == base
            && !closes(line)
            && current.iter().any(|l| !l.trim().is_empty() && !leads(l))
            && !current
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.trim_end().ends_with(['\\', ',', '(', '{', '[']));
        if starts {
            chunks.push(std::mem::take(&mut current));
        }
        current.push(line);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Where the definition that begins at `at` ends (exclusive): the lines indented under it,
/// and the line that closes it at its own indent.
fn extent(file: &[String], at: usize) -> usize {
    let own = indent(&file[at]);
    let mut end = at + 1;
    while end < file.len() {
        let line = &file[end];
        if !line.trim().is_empty() && indent(line) <= own {
            if indent(line) == own && closes(line) {
                end += 1;
            }
            break;
        }
        end += 1;
    }
    while end > at + 1 && file[end - 1].trim().is_empty() {
        end -= 1;
    }
    end
}

/// A chunk's lines moved to the indent of the line it replaces (`None`: left as they are),
/// without the blank lines at its end.
fn rebased(chunk: &[&str], header: usize, pad: Option<usize>) -> Vec<String> {
    let from = indent(chunk[header]);
    let mut lines: Vec<String> = chunk
        .iter()
        .map(|line| match pad {
            Some(pad) if !line.trim().is_empty() => {
                let cut = indent(line).min(from);
                format!("{}{}", " ".repeat(pad), &line[cut..])
            }
            _ if line.trim().is_empty() => String::new(),
            _ => (*line).to_owned(),
        })
        .collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_belongs_to_the_path_written_above_it() {
        let reply = "Files: src/slug.js, index.js.\n\nI fix `src/slug.js`, which `test/slug.test.js` tests. Here it is:\n\n```javascript\nfunction slugify(t) {\n  return t;\n}\n```\n\nAnd index.js:\n```js\nrun();\n```\n";
        let found = blocks(reply);
        assert_eq!(found.len(), 2);
        assert_eq!(
            found[0].names,
            ["test/slug.test.js", "src/slug.js", "index.js"]
        );
        assert_eq!(found[0].body, "function slugify(t) {\n  return t;\n}");
        assert_eq!(found[1].names, ["index.js"]);
        assert_eq!(found[1].heading.as_deref(), Some("index.js"));
        assert_eq!(found[0].heading.as_deref(), Some("test/slug.test.js"));
        assert_eq!(found[1].lang, "js");
        assert!(!found[1].is_shell());
        assert!(blocks("```bash\necho hi > a.txt\n```")[0].is_shell());
        assert_eq!(found[1].body, "run();");
    }

    #[test]
    fn a_name_on_the_blocks_first_line_heads_it() {
        // What the real model wrote: a comment naming the file, one block per file.
        let reply = "```javascript\n# index.js\nconst { sum } = require(\"./lib/math\");\n```\n\n```javascript\n// lib/math.js\nfunction sum(a, b) {}\n```";
        let found = blocks(reply);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].heading.as_deref(), Some("index.js"));
        assert_eq!(found[0].names, ["index.js"]);
        assert_eq!(found[0].named_by.as_deref(), Some("# index.js"));
        assert_eq!(found[0].body, "const { sum } = require(\"./lib/math\");");
        assert_eq!(found[1].heading.as_deref(), Some("lib/math.js"));
        assert_eq!(found[1].body, "function sum(a, b) {}");
        // A terminal's `cat` of the new text, and a bare name.
        let shown = blocks(
            "```sh\n> cat lib/math.js\nmodule.exports = {};\n```\n```\naccounts.py\ndef f():\n    pass\n```",
        );
        assert_eq!(shown[0].heading.as_deref(), Some("lib/math.js"));
        assert_eq!(shown[0].body, "module.exports = {};");
        assert_eq!(shown[1].heading.as_deref(), Some("accounts.py"));
        // A line that is the whole block is a command, and a shebang or a sentence names
        // no file.
        let alone = blocks(
            "```sh\n./test.sh\n```\n```sh\n#!/bin/sh\necho hi\n```\n```py\n# Small helpers.\nx = 1\n```",
        );
        assert_eq!(alone[0].body, "./test.sh");
        assert_eq!(alone[0].heading, None);
        assert_eq!(alone[1].body, "#!/bin/sh\necho hi");
        assert_eq!(alone[2].body, "# Small helpers.\nx = 1");
    }

    #[test]
    fn fences_nested_inside_a_block_are_taken_apart() {
        // Both shapes the real model wrote: a name and a fence opened again inside the
        // block, and a `~~~~` copy of how files were once shown to it.
        let nested = "```sh\nsum.sh\n```sh\n#!/bin/sh\necho 0\n```";
        let found = blocks(nested);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].heading.as_deref(), Some("sum.sh"));
        assert_eq!(found[0].lang, "sh");
        assert_eq!(found[0].body, "#!/bin/sh\necho 0");
        let tildes = "```\naccounts.py\n~~~~\ndef withdraw(b, a):\n    return b - a\n~~~~\n```";
        let found = blocks(tildes);
        assert_eq!(found[0].heading.as_deref(), Some("accounts.py"));
        assert_eq!(found[0].body, "def withdraw(b, a):\n    return b - a");
        // Two files in one block, each named above its own inner fence.
        let two = "```rust\n# Cargo.toml\n```toml\n[package]\n```\n# src/lib.rs\n```rust\npub fn f() {}\n```";
        let found = blocks(two);
        let heads: Vec<_> = found.iter().map(|b| b.heading.clone().unwrap()).collect();
        assert_eq!(heads, ["Cargo.toml", "src/lib.rs"]);
        assert_eq!(found[1].body, "pub fn f() {}");
        // A fence of tildes is a block of its own too.
        assert_eq!(
            blocks("app.py\n~~~python\nx = 1\n~~~")[0]
                .heading
                .as_deref(),
            Some("app.py")
        );
    }

    #[test]
    fn names_that_leave_the_workspace_or_are_not_paths_are_not_names() {
        assert_eq!(
            names_in("see ../etc/passwd, /etc/hosts, or 3.14 and /workspace/app/main.py."),
            ["app/main.py"]
        );
        assert!(blocks("```\n```\nno body").is_empty());
    }

    #[test]
    fn a_block_with_most_of_the_file_is_the_whole_file() {
        let original = "import sys\n\ndef main():\n    print(1)\n\nmain()\n";
        let body = "import sys\n\ndef main():\n    print(2)\n\nmain()";
        assert_eq!(
            merge(original, body),
            Ok(Merged::Whole(format!("{body}\n")))
        );
    }

    #[test]
    fn a_function_replaces_the_one_that_begins_with_its_line() {
        let original = "\"\"\"Stats.\"\"\"\n\n\ndef mean(values):\n    \"\"\"The mean.\"\"\"\n    return sum(values) / (len(values) - 1)\n\n\ndef total(values):\n    return sum(values)\n";
        let body =
            "def mean(values):\n    \"\"\"The mean.\"\"\"\n    return sum(values) / len(values)";
        let merged = merge(original, body).unwrap();
        assert_eq!(
            merged.text(),
            "\"\"\"Stats.\"\"\"\n\n\ndef mean(values):\n    \"\"\"The mean.\"\"\"\n    return sum(values) / len(values)\n\n\ndef total(values):\n    return sum(values)\n"
        );
        assert!(
            matches!(merged, Merged::Definitions { replaced, .. } if replaced == ["def mean(values):"])
        );
    }

    #[test]
    fn braces_comments_and_a_new_helper_are_placed() {
        let original = "// Slugs.\n\n/// Makes a slug.\nfunction slugify(title) {\n  return title.toLowerCase().replace(\" \", \"-\");\n}\n\nmodule.exports = { slugify };\n";
        let body = "function dash(word) {\n  return word;\n}\n\n/// Makes a slug of every word.\nfunction slugify(title) {\n  return title.toLowerCase().split(\" \").join(\"-\");\n}";
        let merged = merge(original, body).unwrap();
        assert_eq!(
            merged.text(),
            "// Slugs.\n\nfunction dash(word) {\n  return word;\n}\n\n/// Makes a slug of every word.\nfunction slugify(title) {\n  return title.toLowerCase().split(\" \").join(\"-\");\n}\n\nmodule.exports = { slugify };\n"
        );
    }

    #[test]
    fn a_method_is_put_back_at_its_indent() {
        let original = "class A:\n    def f(self):\n        return 1\n\n    def g(self):\n        return 2\n\n\nA()\n";
        let body = "def f(self):\n    return 3";
        assert_eq!(
            merge(original, body).unwrap().text(),
            "class A:\n    def f(self):\n        return 3\n\n    def g(self):\n        return 2\n\n\nA()\n"
        );
    }

    #[test]
    fn a_block_that_fits_nowhere_is_refused_with_the_reason() {
        let original = "a = 1\nb = 2\nc = 3\nd = 4\ne = 5\nf = 6\ng = 7\nh = 8\ni = 9\nj = 10\n";
        let error = merge(original, "python3 -m unittest").unwrap_err();
        assert!(
            error.contains("`python3 -m unittest` is not in it"),
            "{error}"
        );
        let twice = "x = 1\nprint(x)\nx = 1\nprint(x)\ny = 2\nz = 3\nw = 4\nv = 5\nu = 6\n";
        let error = merge(twice, "x = 1").unwrap_err();
        assert!(error.contains("more than once"), "{error}");
    }

    #[test]
    fn a_block_that_places_nothing_but_is_as_long_is_a_rewrite() {
        let test = "#!/bin/sh\npython3 -c 'from stats import mean' || exit 1\n";
        let body = "def mean(values):\n    return sum(values) / len(values)";
        assert_eq!(merge(test, body), Ok(Merged::Rewrite(format!("{body}\n"))));
    }

    #[test]
    fn a_rewrite_of_a_short_file_is_the_whole_file() {
        let original = "#!/bin/sh\n# Counts lines.\ngrep -c '' \"$1\"\n";
        let body = "#!/bin/sh\n# Counts the lines that are not empty.\ngrep -c . \"$1\"";
        assert_eq!(
            merge(original, body),
            Ok(Merged::Whole(format!("{body}\n")))
        );
    }
}
