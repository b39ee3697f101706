//! The commands a task's description names for what must work once it is done ("`node
//! index.js` must still print 5", "`python3 greet.py Ada --shout` prints `HELLO, ADA!`"):
//! the acceptance criteria that can be run, with the text their output must hold. Pure text
//! in, commands out; the engine runs them in the sandbox, as it runs the checks.

/// A command the description says must work, and what it must print, if it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCommand {
    pub command: String,
    pub expect: Option<String>,
}

impl TaskCommand {
    /// The command as an acceptance criterion, for the plan and the reviewer.
    pub fn criterion(&self) -> String {
        match &self.expect {
            Some(expect) => format!("`{}` prints {expect}", self.command),
            None => format!("`{}` runs without an error", self.command),
        }
    }
}

/// The programs a runnable command starts with; anything else in backticks is code or text.
const RUNNERS: [&str; 18] = [
    "python", "python3", "node", "npm", "npx", "yarn", "pnpm", "cargo", "go", "ruby", "bash", "sh",
    "make", "pytest", "deno", "bun", "php", "perl",
];

/// Words after a command that say it is expected to fail now, or to fail on purpose: such a
/// command is no criterion to pass.
const FAILING: [&str; 6] = ["fail", "error", "exit", "crash", "raise", "refuse"];

/// The runnable commands `description` names, each once, at most five.
pub fn task_commands(description: &str) -> Vec<TaskCommand> {
    let spans: Vec<(usize, usize)> = backticked(description);
    let mut found: Vec<TaskCommand> = Vec::new();
    for (n, &(start, end)) in spans.iter().enumerate() {
        let command = description[start..end].trim();
        if !runnable(command) || found.iter().any(|known| known.command == command) {
            continue;
        }
        // What is said of it: the rest of its sentence.
        let rest = &description[end + 1..];
        let sentence_end = [". ", ".\n", "\n", "; "]
            .iter()
            .filter_map(|stop| rest.find(stop))
            .min()
            .unwrap_or(rest.len());
        let said = rest[..sentence_end].to_lowercase();
        if FAILING.iter().any(|word| said.contains(word)) {
            continue;
        }
        let expect = ["print", "output", "show", "say"]
            .iter()
            .filter_map(|verb| said.find(verb))
            .min()
            .and_then(|at| {
                let after = end + 1 + at;
                // The next backticked text in the sentence, or else the next word.
                match spans.get(n + 1) {
                    Some(&(next, next_end)) if next < end + 1 + sentence_end => {
                        Some(description[next..next_end].to_owned())
                    }
                    _ => description[after..end + 1 + sentence_end]
                        .split_whitespace()
                        .nth(1)
                        .map(|word| word.trim_end_matches(['.', ',', ')', '!']).to_owned()),
                }
            })
            .filter(|expect| !expect.is_empty());
        found.push(TaskCommand {
            command: command.to_owned(),
            expect,
        });
    }
    found.truncate(5);
    found
}

/// Where each `backticked` span's text lies (single backticks, on one line).
fn backticked(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut open = None;
    for (at, c) in text.char_indices() {
        match (c, open) {
            ('`', None) => open = Some(at + 1),
            ('`', Some(start)) => {
                if at > start {
                    spans.push((start, at));
                }
                open = None;
            }
            ('\n', Some(_)) => open = None,
            _ => {}
        }
    }
    spans
}

fn runnable(command: &str) -> bool {
    let first = command.split_whitespace().next().unwrap_or("");
    command.len() <= 200
        && !command.contains('\n')
        && (RUNNERS.contains(&first) && command.contains(' ') || first.starts_with("./"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(command: &str, expect: Option<&str>) -> TaskCommand {
        TaskCommand {
            command: command.to_owned(),
            expect: expect.map(str::to_owned),
        }
    }

    #[test]
    fn commands_that_must_work_are_found_with_what_they_print() {
        assert_eq!(
            task_commands(
                "Rename `addNumbers` to `sum` in lib/math.js and index.js. `node index.js` must still print 5."
            ),
            [command("node index.js", Some("5"))]
        );
        assert_eq!(
            task_commands(
                "Add a `--shout` flag to greet.py (`python3 greet.py Ada --shout` prints `HELLO, ADA!`). Without it, nothing changes."
            ),
            [command("python3 greet.py Ada --shout", Some("HELLO, ADA!"))]
        );
        assert_eq!(
            task_commands("Make `./run.sh build` work, then `npm test` passes."),
            [command("./run.sh build", None), command("npm test", None)]
        );
        assert_eq!(
            command("node index.js", Some("5")).criterion(),
            "`node index.js` prints 5"
        );
    }

    #[test]
    fn failing_commands_code_and_text_are_not_criteria() {
        // Failing now, or failing on purpose: no criterion to pass.
        assert!(task_commands("`npm test` fails: `slugify(\"a b\")` returns \"a b\".").is_empty());
        assert!(task_commands("`python3 -m unittest` fails: `mean([1, 2, 3])` is 3.").is_empty());
        assert!(task_commands("Without arguments `./sum.sh` must exit with status 2.").is_empty());
        // Code, messages and bare words are not commands.
        assert!(task_commands("Print `usage: sum.sh N...` and call `parse(x, y)`.").is_empty());
        assert!(task_commands("Run `make`, or `ls`.").is_empty());
        // An unclosed backtick does not swallow the next line.
        assert!(task_commands("a `b\n`node x.js` prints 1").len() == 1);
    }
}
