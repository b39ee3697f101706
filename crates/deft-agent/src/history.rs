//! A step's conversation kept to what the model still needs: every turn sends the whole of
//! it again, and on a model without a prompt cache each old tool result is read again at
//! every turn. Results older than the last few turns keep their head and tail; what the model
//! took from them is in its own answers, which stay whole.

use deft_llm::{Content, Message};

/// How many of the latest turns' results stay whole.
pub const KEEP_WHOLE: usize = 3;
/// How many characters an older result keeps, head and tail together.
pub const OLD_RESULT_CHARS: usize = 1200;

/// Cuts the tool results of all but the last [`KEEP_WHOLE`] turns to [`OLD_RESULT_CHARS`].
/// A result cut once is not cut again, so the conversation's start stays the same from turn
/// to turn (a provider's prompt cache keeps working up to the newest cut).
pub fn trim_old_results(messages: &mut [Message]) {
    let with_results: Vec<usize> = messages
        .iter()
        .enumerate()
        .filter(|(_, message)| {
            message
                .content
                .iter()
                .any(|content| matches!(content, Content::ToolResult(_)))
        })
        .map(|(index, _)| index)
        .collect();
    let old = with_results.len().saturating_sub(KEEP_WHOLE);
    for &index in &with_results[..old] {
        for content in &mut messages[index].content {
            if let Content::ToolResult(result) = content {
                result.content = shortened(&result.content);
            }
        }
    }
}

fn shortened(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= OLD_RESULT_CHARS {
        return text.to_owned();
    }
    // The marker's 80 characters at most are within the cap, so a cut result is not cut again.
    let half = (OLD_RESULT_CHARS - 80) / 2;
    let head: String = chars[..half].iter().collect();
    let tail: String = chars[chars.len() - half..].iter().collect();
    format!(
        "{head}\n[… {} characters of this earlier result left out …]\n{tail}",
        chars.len() - 2 * half
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use deft_llm::ToolResult;

    fn result(text: &str) -> Message {
        Message::tool_results(vec![ToolResult {
            call_id: "c".into(),
            content: text.into(),
            is_error: false,
        }])
    }

    fn content(message: &Message) -> &str {
        match &message.content[0] {
            Content::ToolResult(result) => &result.content,
            _ => panic!("a result"),
        }
    }

    #[test]
    fn old_results_keep_head_and_tail_and_the_latest_stay_whole() {
        let long = format!("HEAD{}TAIL", "x".repeat(5000));
        let mut messages = vec![Message::user("task")];
        for _ in 0..5 {
            messages.push(result(&long));
        }
        trim_old_results(&mut messages);
        for message in &messages[1..3] {
            let cut = content(message);
            assert!(cut.starts_with("HEAD") && cut.ends_with("TAIL"), "{cut}");
            assert!(cut.contains("characters of this earlier result left out"));
            assert!(cut.chars().count() <= OLD_RESULT_CHARS);
        }
        for message in &messages[3..] {
            assert_eq!(content(message), long);
        }
        // Cut once, a result is not cut again.
        let before = content(&messages[1]).to_owned();
        trim_old_results(&mut messages);
        assert_eq!(content(&messages[1]), before);
    }
}
