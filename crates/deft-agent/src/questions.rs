//! Which questions go to the owner. A question parks the task until a person answers, so one
//! about the sandbox's tools, a failing command, or a choice the agent can make itself is sent
//! back to the model with why, [`SENT_BACK`] times in a phase; after that, it goes to the owner.

/// How many questions not for the owner are sent back in one phase (planning, or a step)
/// before the next goes to the owner: a model that rephrases is still asking the same.
pub const SENT_BACK: u32 = 2;

/// Why `question` is not one for the owner, or `None` when it may be.
pub fn not_for_the_owner(question: &str) -> Option<&'static str> {
    let asked = question.to_lowercase();
    const ENVIRONMENT: [&str; 10] = [
        "command not found",
        "could not be found",
        "not installed",
        "install it",
        "to install",
        "permission denied",
        "no such file",
        "failed to open",
        "the sandbox",
        "traceback",
    ];
    const PERMISSION: [&str; 16] = [
        "do you want me to",
        "would you like me to",
        "do you want to ",
        "would you like to ",
        "shall i ",
        "should i proceed",
        "may i ",
        "can i ",
        "is it ok",
        "is it okay",
        "do you want to create",
        "please confirm",
        "are you sure",
        "can you confirm",
        "is this correct",
        "is that correct",
    ];
    // The owner asked to do or explain what the agent can find out itself.
    const OWN_WORK: [&str; 15] = [
        "what is the error",
        "please provide the value",
        "old_str",
        "fails. why",
        "failed. why",
        "why does it fail",
        "why is it failing",
        "what went wrong",
        "did you try",
        "did you check",
        "did you run",
        "can you run",
        "could you run",
        "please run",
        "can you check",
    ];
    if OWN_WORK.iter().any(|words| asked.contains(words)) {
        return Some(
            "it asks the owner to run, check or explain what the tools let you find out yourself: run the command, read the output and the files, and go on",
        );
    }
    // A closing pleasantry is not a question: the task says what there is to do.
    if ["anything else", "something else", "any other"]
        .iter()
        .any(|words| asked.contains(words))
    {
        return Some(
            "it asks whether there is more to do, which the task already says: finish the work it asks for, then end the step",
        );
    }
    // What a test expects is written in the test.
    if asked.contains("test")
        && ["pass", "expect", "fail"]
            .iter()
            .any(|words| asked.contains(words))
    {
        return Some(
            "it asks what the tests expect, which the tests themselves say: read the failing test and its output, and make the code do what it asserts",
        );
    }
    const HOW_TO_WORK: [&str; 7] = [
        "is there a way to",
        "how do i ",
        "how can i ",
        "how should i ",
        "view or edit",
        "open the file",
        "text editor",
    ];
    if HOW_TO_WORK.iter().any(|words| asked.contains(words)) {
        return Some(
            "it asks how to work here, which the tools answer: str_replace_based_edit_tool views, creates and edits files, search finds text, bash runs any command in the repository",
        );
    }
    if ENVIRONMENT.iter().any(|words| asked.contains(words)) {
        return Some(
            "it is about the sandbox or a command, which the owner cannot fix from here: look at the error, use another tool or approach (the editor instead of an interactive program, a script instead of a missing tool), and go on",
        );
    }
    if PERMISSION.iter().any(|words| asked.contains(words)) {
        return Some(
            "it asks for permission to do something the task already asks for: do it, and say so in the summary",
        );
    }
    None
}

/// What the model is told instead of the owner being asked.
pub fn sent_back(why: &str) -> String {
    format!(
        "Not asked: {why}. Ask the owner only when the answer changes what you build and neither the task nor the code settles it; if this is such a question, ask it again, saying what each answer would change."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_errors_and_permission_are_not_questions() {
        for question in [
            "The command 'nano' could not be found. Did you perhaps forget to install it?",
            "Do you want to create a new util.py file?",
            "Should I proceed with the change?",
            "bash: vim: command not found — what now?",
            "Is there a way to view or edit the `duration.js` file?",
            "Are you sure you want to replace 'title' with 'slug' in this function?",
            "What went wrong? Did you try running the command manually?",
            "The `is_leap` function fails. Why?",
            "Please provide the value of `old_str` that you want to replace.",
            "What should the function `is_leap` do to pass the `centuries_are_not_unless_divisible_by_400` test?",
            "What does the test expect `mean` to return?",
            "Is there anything else you'd like to do?",
            "Do you want to add a test that uses the is_leap function? (yes/no)",
        ] {
            assert!(not_for_the_owner(question).is_some(), "{question}");
        }
    }

    #[test]
    fn a_choice_only_the_owner_can_make_is_a_question() {
        for question in [
            "Which language should the greeting be in?",
            "Should an empty list return None or raise ValueError?",
            "Which port?",
            "Do you want the greeting in English or in French?",
        ] {
            assert_eq!(not_for_the_owner(question), None, "{question}");
        }
    }
}
