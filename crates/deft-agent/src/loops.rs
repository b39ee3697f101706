//! Loops caught by what the agent repeats, not only by how it fails: the same call again and
//! again (whether it fails or not), and short cycles of calls (`a, b, a, b, a, b`). A real
//! model stuck this way spends a step's every turn; the agent is told once, and a loop after
//! that ends the step with the reason. Turns that change no file of the workspace, however
//! varied, are watched the same way.

/// How many times in a row a cycle of two or three calls must come round to be a loop.
const CYCLE_ROUNDS: usize = 3;

/// How many turns in a row that change no file of the workspace are a loop.
pub const STILL_TURNS: usize = 15;

/// What the agent called in one step, watched for repetition.
#[derive(Debug)]
pub struct LoopWatch {
    /// How many identical calls in a row are a loop.
    repeats: usize,
    /// Each call as `name arguments`, in order.
    calls: Vec<String>,
    told: bool,
    /// The workspace's state after the last turn watched, and for how many turns it stood.
    state: Option<String>,
    still: usize,
    told_still: bool,
}

/// What a call adds to the watch.
#[derive(Debug, PartialEq, Eq)]
pub enum Repetition {
    None,
    /// A loop, for the first time: the model is told this, with the call's result.
    Told(String),
    /// A loop again after being told: the step ends, with this reason.
    Stop(String),
}

impl LoopWatch {
    /// A watch that calls `repeats` identical calls in a row a loop (at least 2).
    pub fn new(repeats: u32) -> LoopWatch {
        LoopWatch {
            repeats: (repeats as usize).max(2),
            calls: Vec::new(),
            told: false,
            state: None,
            still: 0,
            told_still: false,
        }
    }

    /// Adds the end of a turn, with `state`, a fingerprint of the workspace's files.
    pub fn turn_ended(&mut self, state: &str) -> Repetition {
        if self.state.as_deref() == Some(state) {
            self.still += 1;
        } else {
            self.state = Some(state.to_owned());
            self.still = 0;
        }
        if self.still < STILL_TURNS {
            return Repetition::None;
        }
        self.still = 0;
        if self.told_still {
            return Repetition::Stop(format!(
                "{STILL_TURNS} more turns changed no file after the agent was told"
            ));
        }
        self.told_still = true;
        Repetition::Told(format!(
            "The last {STILL_TURNS} turns changed no file. Looking further will not do the step: make the change the step asks for now, or, if it needs no change, call `finish` saying what you found."
        ))
    }

    /// Adds a call of `name` with `arguments` (their JSON text).
    pub fn record(&mut self, name: &str, arguments: &str) -> Repetition {
        self.calls.push(format!("{name} {arguments}"));
        let Some(what) = self.repeated(name) else {
            return Repetition::None;
        };
        if self.told {
            return Repetition::Stop(format!(
                "the agent kept repeating itself after it was told: {what}"
            ));
        }
        self.told = true;
        // What was seen is forgiven: only repeating it again stops the step.
        self.calls.clear();
        Repetition::Told(format!(
            "You are repeating yourself: {what}. Doing it again will give the same result. Try something different: read the error, look at the files, or change your approach; if the step is done, call `finish`."
        ))
    }

    /// The repetition the last calls make, said in words.
    fn repeated(&self, name: &str) -> Option<String> {
        let calls = &self.calls;
        let last = calls.last()?;
        let same = calls.iter().rev().take_while(|call| *call == last).count();
        if same >= self.repeats {
            return Some(format!("the same `{name}` call {same} times in a row"));
        }
        for period in 2..=3 {
            let span = period * CYCLE_ROUNDS;
            if calls.len() < span {
                continue;
            }
            let tail = &calls[calls.len() - span..];
            let cycle = &tail[..period];
            let distinct = cycle.iter().skip(1).any(|call| *call != cycle[0]);
            if distinct && tail.chunks(period).all(|round| round == cycle) {
                let names: Vec<&str> = cycle
                    .iter()
                    .map(|call| call.split(' ').next().unwrap_or(""))
                    .collect();
                return Some(format!(
                    "the same {period} calls ({}) in turn, {CYCLE_ROUNDS} times over",
                    names.join(", ")
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_call_is_told_once_then_stops() {
        let mut watch = LoopWatch::new(3);
        assert_eq!(watch.record("search", "{\"q\":\"x\"}"), Repetition::None);
        assert_eq!(watch.record("search", "{\"q\":\"x\"}"), Repetition::None);
        let Repetition::Told(told) = watch.record("search", "{\"q\":\"x\"}") else {
            panic!("three in a row are a loop");
        };
        assert!(
            told.contains("the same `search` call 3 times in a row"),
            "{told}"
        );
        assert_eq!(watch.record("search", "{\"q\":\"x\"}"), Repetition::None);
        assert_eq!(watch.record("search", "{\"q\":\"x\"}"), Repetition::None);
        assert!(matches!(
            watch.record("search", "{\"q\":\"x\"}"),
            Repetition::Stop(reason) if reason.contains("after it was told")
        ));
    }

    #[test]
    fn turns_that_change_nothing_are_told_once_then_stop() {
        let mut watch = LoopWatch::new(3);
        for _ in 0..STILL_TURNS {
            assert_eq!(watch.turn_ended("a"), Repetition::None);
        }
        assert!(
            matches!(watch.turn_ended("a"), Repetition::Told(told) if told.contains("changed no file"))
        );
        // A change starts the count again.
        for _ in 0..STILL_TURNS {
            assert_eq!(watch.turn_ended("b"), Repetition::None);
        }
        assert!(matches!(watch.turn_ended("b"), Repetition::Stop(_)));
    }

    #[test]
    fn short_cycles_are_loops_and_varied_work_is_not() {
        let mut watch = LoopWatch::new(3);
        let cycle = [
            ("bash", "sudo apt-get install sudo"),
            ("bash", "nano util.py"),
        ];
        let mut seen = Vec::new();
        for (name, arguments) in cycle.iter().cycle().take(6) {
            seen.push(watch.record(name, arguments));
        }
        assert_eq!(&seen[..5], &[const { Repetition::None }; 5]);
        assert!(
            matches!(&seen[5], Repetition::Told(told) if told.contains("the same 2 calls (bash, bash) in turn")),
            "{seen:?}"
        );
        let mut varied = LoopWatch::new(3);
        for n in 0..30 {
            let arguments = format!("{{\"command\": \"sed -n {n}p util.py\"}}");
            assert_eq!(varied.record("bash", &arguments), Repetition::None);
        }
        let mut edits = LoopWatch::new(3);
        for n in 0..10 {
            assert_eq!(edits.record("bash", "cat util.py"), Repetition::None);
            assert_eq!(edits.record("edit", &format!("line {n}")), Repetition::None);
        }
    }
}
