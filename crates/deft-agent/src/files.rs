//! The editor (`str_replace_based_edit_tool`) and the search, over the workspace's files on the
//! host. The sandbox's commands may have put anything there (links, FIFOs, devices, files
//! swapped between a check and a use), so every file is reached beneath the workspace, opened
//! without blocking and without following a last link, checked to be a regular file of a
//! bounded size, and all of it runs on a blocking thread (`Tools::file_tool`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use deft_sandbox::workspace;
use serde_json::Value;

use crate::tools::{MAX_MATCHES, ToolOutput, capped, numbered, string};

/// How long one search may walk before it answers with what it found.
const SEARCH_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

/// The workspace's files as the tools see them, with the undo history of the edits.
#[derive(Debug)]
pub struct Files {
    workspace: PathBuf,
    /// Each edited file's earlier contents, newest last, for `undo_edit`.
    history: HashMap<String, Vec<Vec<u8>>>,
}

impl Files {
    pub fn new(workspace: &Path) -> Files {
        Files {
            workspace: workspace.to_owned(),
            history: HashMap::new(),
        }
    }

    pub fn edit(&mut self, arguments: &Value) -> Result<ToolOutput, ToolOutput> {
        let command = string(arguments, "command")?;
        let path = string(arguments, "path")?;
        // The workspace itself may be viewed, as a directory; nothing else above its files.
        if command == "view" && matches!(path.trim_end_matches('/'), "/workspace" | "." | "") {
            return self.view(arguments, ".", "/workspace");
        }
        let relative =
            workspace::relative(path).map_err(|error| ToolOutput::error(error.to_string()))?;
        let shown = format!("/workspace/{relative}");
        let fail =
            |error: deft_sandbox::SandboxError| ToolOutput::error(format!("{shown}: {error}"));
        match command {
            "view" => self.view(arguments, &relative, &shown),
            "create" => {
                let text = string(arguments, "file_text")?;
                // Writing a small file whole is the edit a weak model gets right most often;
                // what it held is kept for `undo_edit`.
                let before = match workspace::is_dir(&self.workspace, &relative).map_err(fail)? {
                    Some(true) => {
                        return Err(ToolOutput::error(format!(
                            "{shown} is a directory; give the path of a file"
                        )));
                    }
                    Some(false) => Some(self.read_text(&relative, &shown)?),
                    None => None,
                };
                workspace::create_parents(&self.workspace, &relative).map_err(fail)?;
                workspace::write(&self.workspace, &relative, text.as_bytes()).map_err(fail)?;
                let said = match &before {
                    Some(old) => format!(
                        "wrote the whole of {shown} ({} lines; it had {})",
                        text.lines().count(),
                        old.lines().count()
                    ),
                    None => format!("created {shown}"),
                };
                self.history
                    .entry(relative)
                    .or_default()
                    .push(before.map(String::into_bytes).unwrap_or_default());
                Ok(ToolOutput::ok(said))
            }
            "str_replace" => {
                if !arguments["old_str"].is_string() {
                    return Err(ToolOutput::error(format!(
                        "`old_str` is required: copy the exact text to replace from the file, with `new_str` the text to put there{}; or write the whole file again: `create` with `file_text` the complete new file",
                        if arguments.get("view_range").is_some() {
                            " (`view_range` belongs to `view`)"
                        } else {
                            ""
                        }
                    )));
                }
                let old = string(arguments, "old_str")?;
                if old.is_empty() {
                    return Err(ToolOutput::error(
                        "`old_str` is empty: copy the exact text to replace from the file (to add lines, use `insert` with `insert_line`)",
                    ));
                }
                // A missing `new_str` used to delete `old_str`: a model that forgot it lost
                // code it meant to change.
                let new = arguments["new_str"].as_str().ok_or_else(|| {
                    ToolOutput::error(
                        "`new_str` is required: the text that takes the place of `old_str` (give \"\" to delete it)",
                    )
                })?;
                let before = self.read_text(&relative, &shown)?;
                let found: Vec<usize> = before.match_indices(old).map(|(at, _)| at).collect();
                let at = match found.as_slice() {
                    [at] => *at,
                    [] => {
                        return Err(ToolOutput::error(format!(
                            "no replacement was made: `old_str` does not occur verbatim in {shown}; view the file and copy the text exactly"
                        )));
                    }
                    many => {
                        let lines: Vec<String> = many
                            .iter()
                            .map(|at| (before[..*at].lines().count().max(1)).to_string())
                            .collect();
                        return Err(ToolOutput::error(format!(
                            "no replacement was made: `old_str` occurs {} times in {shown} (lines {}); include more context so it occurs once",
                            many.len(),
                            lines.join(", ")
                        )));
                    }
                };
                let after = format!("{}{new}{}", &before[..at], &before[at + old.len()..]);
                self.save(&relative, before.into_bytes(), &after)
                    .map_err(fail)?;
                let line = after[..at].lines().count().max(1);
                Ok(ToolOutput::ok(format!(
                    "edited {shown}:\n{}",
                    snippet(&after, line, new.lines().count())
                )))
            }
            "insert" => {
                let new = string(arguments, "new_str")?;
                let line = arguments["insert_line"].as_u64().ok_or_else(|| {
                    ToolOutput::error(
                        "`insert_line` is required: the line after which to insert (0 for the top)",
                    )
                })? as usize;
                let before = self.read_text(&relative, &shown)?;
                let lines: Vec<&str> = before.lines().collect();
                if line > lines.len() {
                    return Err(ToolOutput::error(format!(
                        "`insert_line` {line} is past the end of {shown}, which has {} lines",
                        lines.len()
                    )));
                }
                let mut after: Vec<String> = lines[..line].iter().map(|l| l.to_string()).collect();
                after.extend(new.lines().map(str::to_owned));
                after.extend(lines[line..].iter().map(|l| l.to_string()));
                let mut text = after.join("\n");
                if before.ends_with('\n') || before.is_empty() {
                    text.push('\n');
                }
                self.save(&relative, before.into_bytes(), &text)
                    .map_err(fail)?;
                Ok(ToolOutput::ok(format!(
                    "edited {shown}:\n{}",
                    snippet(&text, line + 1, new.lines().count())
                )))
            }
            "undo_edit" => {
                let previous = self
                    .history
                    .get_mut(&relative)
                    .and_then(Vec::pop)
                    .ok_or_else(|| {
                        ToolOutput::error(format!("there is no edit of {shown} to undo"))
                    })?;
                workspace::write(&self.workspace, &relative, &previous).map_err(fail)?;
                Ok(ToolOutput::ok(format!("reverted the last edit of {shown}")))
            }
            other => Err(ToolOutput::error(format!(
                "unknown command `{other}`; use view, create, str_replace, insert or undo_edit"
            ))),
        }
    }

    /// A file's text, for deft's own reading (not the model's `view`).
    pub fn text(&self, path: &str) -> Result<String, ToolOutput> {
        let relative =
            workspace::relative(path).map_err(|error| ToolOutput::error(error.to_string()))?;
        self.read_text(&relative, &format!("/workspace/{relative}"))
    }

    fn read_text(&self, relative: &str, shown: &str) -> Result<String, ToolOutput> {
        let bytes = workspace::read(&self.workspace, relative)
            .map_err(|error| ToolOutput::error(format!("{shown}: {error}")))?;
        String::from_utf8(bytes)
            .map_err(|_| ToolOutput::error(format!("{shown} is not UTF-8 text; edit it with bash")))
    }

    fn save(
        &mut self,
        relative: &str,
        before: Vec<u8>,
        after: &str,
    ) -> Result<(), deft_sandbox::SandboxError> {
        workspace::write(&self.workspace, relative, after.as_bytes())?;
        self.history
            .entry(relative.to_owned())
            .or_default()
            .push(before);
        Ok(())
    }

    fn view(
        &self,
        arguments: &Value,
        relative: &str,
        shown: &str,
    ) -> Result<ToolOutput, ToolOutput> {
        let fail =
            |error: deft_sandbox::SandboxError| ToolOutput::error(format!("{shown}: {error}"));
        match workspace::is_dir(&self.workspace, relative).map_err(fail)? {
            None => Err(ToolOutput::error(format!("{shown} does not exist"))),
            Some(true) => {
                let mut listing = format!("{shown}/, two levels deep (hidden entries left out):\n");
                for (name, is_dir) in workspace::list(&self.workspace, relative).map_err(fail)? {
                    if name.starts_with('.') {
                        continue;
                    }
                    listing.push_str(&format!("{name}{}\n", if is_dir { "/" } else { "" }));
                    if is_dir {
                        let inner = format!("{relative}/{name}");
                        for (child, child_dir) in
                            workspace::list(&self.workspace, &inner).unwrap_or_default()
                        {
                            if !child.starts_with('.') {
                                listing.push_str(&format!(
                                    "  {name}/{child}{}\n",
                                    if child_dir { "/" } else { "" }
                                ));
                            }
                        }
                    }
                }
                Ok(ToolOutput::ok(capped(&listing)))
            }
            Some(false) => {
                let text = self.read_text(relative, shown)?;
                let lines: Vec<&str> = text.lines().collect();
                let (first, last) = match arguments["view_range"].as_array() {
                    Some(range) if range.len() == 2 => {
                        let first = range[0].as_i64().unwrap_or(1).max(1) as usize;
                        let last = match range[1].as_i64() {
                            Some(-1) | None => lines.len(),
                            Some(last) => last.max(0) as usize,
                        };
                        if first > lines.len().max(1) || last < first {
                            return Err(ToolOutput::error(format!(
                                "`view_range` [{first}, {last}] is outside {shown}, which has {} lines",
                                lines.len()
                            )));
                        }
                        (first, last.min(lines.len()))
                    }
                    _ => (1, lines.len()),
                };
                let part = lines
                    .get(first.saturating_sub(1)..last)
                    .unwrap_or_default()
                    .join("\n");
                Ok(ToolOutput::ok(capped(&numbered(&part, first))))
            }
        }
    }

    /// Which of `repos` (directories of the workspace) hold the relative `path`.
    pub fn repositories_holding(&self, path: &str, repos: &[String]) -> Vec<String> {
        let path = path.trim_start_matches("./");
        if path.starts_with('/') {
            return Vec::new();
        }
        repos
            .iter()
            .filter(|repo| {
                workspace::is_dir(&self.workspace, &format!("{repo}/{path}"))
                    .is_ok_and(|found| found.is_some())
            })
            .cloned()
            .collect()
    }

    pub fn search(&self, arguments: &Value) -> Result<ToolOutput, ToolOutput> {
        use grep_searcher::sinks::UTF8;
        let pattern = string(arguments, "pattern")?;
        let matcher = grep_regex::RegexMatcher::new_line_matcher(pattern).map_err(|error| {
            ToolOutput::error(format!(
                "`pattern` is not a valid regular expression: {error}"
            ))
        })?;
        let mut truncated = None;
        let start = match arguments["path"].as_str() {
            Some(path) => {
                let relative = workspace::relative(path)
                    .map_err(|error| ToolOutput::error(error.to_string()))?;
                if workspace::is_dir(&self.workspace, &relative)
                    .map_err(|e| ToolOutput::error(e.to_string()))?
                    .is_none()
                {
                    return Err(ToolOutput::error(format!("{path} does not exist")));
                }
                // The walk starts at a real directory or file, never a link (which it would follow).
                let start = self.workspace.join(relative);
                if !std::fs::symlink_metadata(&start)
                    .is_ok_and(|meta| meta.is_dir() || meta.is_file())
                {
                    return Err(ToolOutput::error(format!(
                        "{path} is a link or a special file, not a directory or file of the workspace; search its target instead"
                    )));
                }
                start
            }
            None => self.workspace.clone(),
        };
        // .gitignore counts even outside a git repository; .git itself is never searched. The
        // ignore files are read by deft, beneath the workspace, regular files only: the
        // walker would open them itself, following links (one to /dev/zero is endless).
        let ignores = SafeIgnores::read(&self.workspace, &start);
        let mut walker = ignores.walker(&start);
        if let Some(glob) = arguments["glob"].as_str() {
            let mut overrides = ignore::overrides::OverrideBuilder::new(&start);
            overrides
                .add(glob)
                .map_err(|error| ToolOutput::error(format!("`glob` is not valid: {error}")))?;
            walker.overrides(
                overrides
                    .build()
                    .map_err(|error| ToolOutput::error(format!("`glob` is not valid: {error}")))?,
            );
        }
        let mut found = Vec::new();
        let started = std::time::Instant::now();
        let mut searcher = grep_searcher::SearcherBuilder::new()
            .binary_detection(grep_searcher::BinaryDetection::quit(0))
            .line_number(true)
            .build();
        for entry in walker.build().flatten() {
            if found.len() >= MAX_MATCHES {
                break;
            }
            // Regular files only: a link could lead out of the workspace.
            if !entry.file_type().is_some_and(|kind| kind.is_file()) {
                continue;
            }
            let shown = entry
                .path()
                .strip_prefix(&self.workspace)
                .unwrap_or(entry.path())
                .display()
                .to_string();
            // Opened again beneath the workspace, without blocking, as a regular file of a
            // bounded size: the walk's look at the entry may be stale by now.
            if started.elapsed() > SEARCH_BUDGET {
                truncated = Some("[stopped after 20 s of searching; narrow `path` or `glob`]");
                break;
            }
            let Ok(file) = workspace::open_to_read(&self.workspace, &shown) else {
                continue;
            };
            let _ = searcher.search_reader(
                &matcher,
                std::io::Read::take(file, workspace::MAX_FILE_BYTES),
                UTF8(|line, text| {
                    found.push(format!("{shown}:{line}:{}", text.trim_end()));
                    Ok(found.len() < MAX_MATCHES)
                }),
            );
            if started.elapsed() > SEARCH_BUDGET {
                truncated = Some("[stopped after 20 s of searching; narrow `path` or `glob`]");
                break;
            }
        }
        if found.is_empty() {
            let mut answer = format!("no match for `{pattern}`");
            if let Some(note) = truncated {
                answer.push('\n');
                answer.push_str(note);
            }
            return Ok(ToolOutput::ok(answer));
        }
        let mut content = found.join("\n");
        if found.len() >= MAX_MATCHES {
            content.push_str(&format!(
                "\n[stopped at {MAX_MATCHES} matches; narrow the pattern, `path` or `glob`]"
            ));
        }
        if let Some(note) = truncated {
            content.push('\n');
            content.push_str(note);
        }
        Ok(ToolOutput::ok(capped(&content)))
    }
}

/// A few numbered lines around an edit, to show the model what the file now says.
fn snippet(text: &str, line: usize, changed: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let first = line.saturating_sub(4).max(1);
    let last = (line + changed + 3).min(lines.len());
    if first > last {
        return String::new();
    }
    numbered(&lines[first - 1..last].join("\n"), first)
}

/// The `.gitignore` and `.ignore` files under a walk's start, read by deft: each a regular
/// file beneath the workspace, 1 MiB at most, opened without blocking or following a link.
/// Anything else named so is left out, as if it were not there.
pub struct SafeIgnores {
    /// Each directory's rules, deepest last.
    rules: Vec<(PathBuf, ignore::gitignore::Gitignore)>,
}

impl SafeIgnores {
    pub fn read(workspace: &Path, start: &Path) -> SafeIgnores {
        let mut rules = Vec::new();
        let walker = ignore::WalkBuilder::new(start)
            .standard_filters(false)
            .follow_links(false)
            .filter_entry(|entry| entry.file_name() != ".git")
            .build();
        for entry in walker.flatten() {
            let name = entry.file_name();
            if name != ".gitignore" && name != ".ignore" {
                continue;
            }
            let (Some(dir), Ok(relative)) =
                (entry.path().parent(), entry.path().strip_prefix(workspace))
            else {
                continue;
            };
            let Ok(bytes) =
                workspace::read_capped(workspace, &relative.to_string_lossy(), 1024 * 1024)
            else {
                continue;
            };
            let mut builder = ignore::gitignore::GitignoreBuilder::new(dir);
            for line in String::from_utf8_lossy(&bytes).lines() {
                let _ = builder.add_line(None, line);
            }
            if let Ok(matcher) = builder.build() {
                rules.push((dir.to_path_buf(), matcher));
            }
        }
        // Shallow directories first, so that a deeper file's rule wins.
        rules.sort_by_key(|(dir, _)| dir.components().count());
        SafeIgnores { rules }
    }

    /// Whether `path` is ignored: the deepest rule that says anything decides.
    pub fn ignored(&self, path: &Path, is_dir: bool) -> bool {
        let mut ignored = false;
        for (dir, matcher) in &self.rules {
            if !path.starts_with(dir) {
                continue;
            }
            match matcher.matched(path, is_dir) {
                ignore::Match::Ignore(_) => ignored = true,
                ignore::Match::Whitelist(_) => ignored = false,
                ignore::Match::None => {}
            }
        }
        ignored
    }

    /// A walker of `start` that opens no ignore file itself and applies these rules.
    pub fn walker(self, start: &Path) -> ignore::WalkBuilder {
        let mut walker = ignore::WalkBuilder::new(start);
        walker
            .standard_filters(false)
            .hidden(false)
            .follow_links(false)
            .filter_entry(move |entry| {
                entry.file_name() != ".git"
                    && !self.ignored(
                        entry.path(),
                        entry.file_type().is_some_and(|kind| kind.is_dir()),
                    )
            });
        walker
    }
}
