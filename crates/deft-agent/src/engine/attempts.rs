//! A step's attempts: one that gives up (its checks keep failing, a loop, too many turns) has
//! its changes undone and the step starts again from a fresh conversation, told why the last
//! ended. A model that went wrong early rarely finds its way back in the same conversation,
//! and a weak one often gets it right on a second try.

use deft_core::{Attention, StepEvent, StepStatus, WorkStep};
use tokio_util::sync::CancellationToken;

use super::agent::{StepDone, StepEnd, StepInput, own_script};
use super::{Context, Engine, EngineError, Phase, TaskSandbox};
use crate::prompts::tail;
use crate::tools::Tools;

impl Engine {
    /// Runs `step` until an attempt is done, or the last has given up.
    pub(super) async fn attempt_step(
        &self,
        context: &Context,
        step: StepInput<'_>,
        tools: &mut Tools<'_, TaskSandbox>,
        cancel: &CancellationToken,
    ) -> Result<Phase<StepDone>, EngineError> {
        Ok(match self.attempts(context, step, tools, cancel).await? {
            Tried::Done(done) => Phase::Done(done),
            Tried::Stopped(attention) | Tried::GaveUp(attention) => Phase::Stop(attention),
        })
    }

    /// A self-review's fix, tried as a step. When every attempt gives up, the repositories go
    /// back to how the verified steps left them and the fix is not made (`None`): a weak
    /// reviewer's wrong fix must not cost a change whose checks passed.
    pub(super) async fn attempt_fix(
        &self,
        context: &Context,
        step: StepInput<'_>,
        tools: &mut Tools<'_, TaskSandbox>,
        cancel: &CancellationToken,
    ) -> Result<Phase<Option<StepDone>>, EngineError> {
        let index = step.index;
        let mut verified = StepStart::new(true);
        verified.before_change(tools.sandbox(), cancel).await;
        Ok(match self.attempts(context, step, tools, cancel).await? {
            Tried::Done(done) => Phase::Done(Some(done)),
            Tried::Stopped(attention) => Phase::Stop(attention),
            Tried::GaveUp(attention) => {
                if !verified.restore(tools.sandbox(), cancel).await {
                    return Ok(Phase::Stop(attention));
                }
                self.step(
                    &context.task.id,
                    StepEvent::new(WorkStep::Execution, StepStatus::GivenUp)
                        .index(index)
                        .reason(format!(
                            "the self-review's fix was undone, and the change whose checks passed stands: {}",
                            tail(&attention.message, 1200)
                        )),
                )
                .await?;
                Phase::Done(None)
            }
        })
    }

    async fn attempts(
        &self,
        context: &Context,
        step: StepInput<'_>,
        tools: &mut Tools<'_, TaskSandbox>,
        cancel: &CancellationToken,
    ) -> Result<Tried, EngineError> {
        let attempts = self.limits.step_attempts.max(1);
        let mut earlier: Option<String> = None;
        for attempt in 1..=attempts {
            let input = StepInput {
                // The planner's calls opened the first attempt; a later one starts afresh.
                opening: if attempt == 1 { step.opening } else { &[] },
                ..step
            };
            // Where the repositories stood, noted before the attempt's first call that may
            // change them (none is taken by a step that only reads, or with one attempt).
            let mut start = StepStart::new(attempt < attempts);
            let ended = match self.edit_format {
                super::EditFormat::ToolCalls => {
                    self.execute(
                        context,
                        input,
                        earlier.as_deref(),
                        &mut start,
                        tools,
                        cancel,
                    )
                    .await?
                }
                super::EditFormat::CodeBlocks => {
                    self.write_step(
                        context,
                        input,
                        earlier.as_deref(),
                        &mut start,
                        tools,
                        cancel,
                    )
                    .await?
                }
            };
            let gave_up = match ended {
                Phase::Done(StepEnd::Done(done)) => return Ok(Tried::Done(done)),
                Phase::Stop(attention) => return Ok(Tried::Stopped(attention)),
                Phase::Done(StepEnd::GaveUp(why)) => why,
            };
            // Without a way back to where the step began, a second attempt would start from
            // the first one's leftovers: then there is only the one.
            if attempt == attempts || !start.restore(tools.sandbox(), cancel).await {
                return Ok(Tried::GaveUp(gave_up));
            }
            self.step(
                &context.task.id,
                StepEvent::new(WorkStep::Execution, StepStatus::Restarted)
                    .index(step.index)
                    .reason(tail(&gave_up.message, 1500)),
            )
            .await?;
            earlier = Some(gave_up.message);
        }
        unreachable!("the last attempt returns")
    }
}

/// How a step's attempts ended.
enum Tried {
    Done(StepDone),
    /// A question, a budget, a model that failed: not the step's doing, never retried.
    Stopped(Attention),
    /// Every attempt gave up: checks that kept failing, a loop, too many turns.
    GaveUp(Attention),
}

/// How long taking or restoring a snapshot may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Where each repository of the workspace stood when a step began: its commit, and a tree of
/// everything in it that git does not ignore (changes and new files included), noted just
/// before the first call that may change it.
#[derive(Debug)]
pub(super) struct StepStart {
    noted: Noted,
}

#[derive(Debug)]
enum Noted {
    /// Nothing is noted: no call changed anything yet, or no later attempt will need it.
    Nothing {
        wanted: bool,
    },
    Repos(Vec<RepoStart>),
    /// Noting failed: the step cannot be put back.
    Failed,
}

#[derive(Debug)]
struct RepoStart {
    dir: String,
    head: String,
    tree: String,
}

/// Writes, for each repository, `HEAD TREE DIR`: the tree is made in an index of its own,
/// begun from the repository's (so only what changed is hashed), leaving the repository's
/// index and files as they are.
const SNAPSHOT: &str = r#"for d in /workspace/*/; do
  head=$(git -C "$d" rev-parse -q --verify HEAD 2>/dev/null) || continue
  index=$(mktemp -u /tmp/.deft-step-index.XXXXXX)
  real=$(git -C "$d" rev-parse --path-format=absolute --git-path index)
  [ -f "$real" ] && cp "$real" "$index"
  if GIT_INDEX_FILE=$index git -C "$d" add -A >/dev/null 2>&1 && tree=$(GIT_INDEX_FILE=$index git -C "$d" write-tree); then
    printf '%s %s %s\n' "$head" "$tree" "$d"
  fi
  rm -f "$index"
done"#;

impl StepStart {
    /// `wanted`: whether a later attempt may need the step put back.
    pub(super) fn new(wanted: bool) -> StepStart {
        StepStart {
            noted: Noted::Nothing { wanted },
        }
    }

    /// Notes where the repositories stand, once, before the first call that may change them.
    pub(super) async fn before_change(
        &mut self,
        sandbox: &TaskSandbox,
        cancel: &CancellationToken,
    ) {
        if let Noted::Nothing { wanted: true } = self.noted {
            self.noted = match StepStart::take(sandbox, cancel).await {
                Some(repos) => Noted::Repos(repos),
                None => Noted::Failed,
            };
        }
    }

    async fn take(sandbox: &TaskSandbox, cancel: &CancellationToken) -> Option<Vec<RepoStart>> {
        let output = own_script(sandbox, SNAPSHOT, TIMEOUT, cancel).await?;
        let repos = output
            .lines()
            .filter_map(|line| {
                let mut parts = line.splitn(3, ' ');
                let repo = RepoStart {
                    head: parts.next()?.to_owned(),
                    tree: parts.next()?.to_owned(),
                    dir: parts.next()?.to_owned(),
                };
                repo.is_plain().then_some(repo)
            })
            .collect::<Vec<_>>();
        Some(repos)
    }

    /// Puts each repository back as it was: its branch at the commit, its files as the tree
    /// (what the attempt added removed, ignored files kept), its index at the commit. Whether
    /// every repository went back.
    async fn restore(&self, sandbox: &TaskSandbox, cancel: &CancellationToken) -> bool {
        let repos = match &self.noted {
            Noted::Nothing { .. } => return true,
            Noted::Failed => return false,
            Noted::Repos(repos) => repos,
        };
        let script = repos
            .iter()
            .map(|RepoStart { dir, head, tree }| {
                format!(
                    "git -C '{dir}' reset -q --soft {head} && git -C '{dir}' read-tree --reset -u {tree} && git -C '{dir}' clean -qfd && git -C '{dir}' reset -q || exit 1"
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        if script.is_empty() {
            return true;
        }
        own_script(sandbox, &script, TIMEOUT, cancel)
            .await
            .is_some()
    }
}

impl RepoStart {
    /// What the snapshot printed is what it should be: object names, and a repository's
    /// directory of the workspace (whose names are plain), so it can be quoted in a script.
    fn is_plain(&self) -> bool {
        let object = |name: &str| {
            matches!(name.len(), 40 | 64) && name.bytes().all(|b| b.is_ascii_hexdigit())
        };
        let name = self
            .dir
            .strip_prefix("/workspace/")
            .and_then(|rest| rest.strip_suffix('/'))
            .unwrap_or_default();
        object(&self.head)
            && object(&self.tree)
            && !name.is_empty()
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    }
}

#[cfg(test)]
mod tests {
    use super::RepoStart;

    #[test]
    fn only_plain_snapshot_lines_are_kept() {
        let repo = |dir: &str, head: &str| RepoStart {
            dir: dir.into(),
            head: head.into(),
            tree: "b".repeat(40),
        };
        let hash = "a".repeat(40);
        assert!(repo("/workspace/app/", &hash).is_plain());
        assert!(repo("/workspace/my-lib.v2/", &hash).is_plain());
        for dir in [
            "/workspace/a'b/",
            "/workspace/../",
            "/workspace//",
            "/etc/",
            "/workspace/a b/",
            "/workspace/a",
        ] {
            assert!(!repo(dir, &hash).is_plain(), "{dir}");
        }
        assert!(!repo("/workspace/app/", "HEAD;rm").is_plain());
        assert!(!repo("/workspace/app/", &"g".repeat(40)).is_plain());
    }
}
