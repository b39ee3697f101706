//! Keeping a request inside the model's window: tokens are estimated on the safe side (three
//! characters a token), and old tool output is elided, oldest first, before anything else.
//! The task, the plan and the steering live in the system prompt and the first message, which
//! are never touched.

use deft_llm::{Content, Request};

/// Characters per token, low on purpose: an estimate that errs high keeps requests and
/// budgets safe.
const CHARS_PER_TOKEN: usize = 3;
/// Tool output shorter than this is not worth eliding.
const WORTH_ELIDING: usize = 200;

/// The request's size in tokens, estimated on the safe side.
pub fn estimate(request: &Request) -> usize {
    let system: usize = request.system.iter().map(String::len).sum();
    let tools: usize = request
        .tools
        .iter()
        .map(|t| t.name.len() + t.description.len() + t.input_schema.to_string().len())
        .sum();
    let messages: usize = request
        .messages
        .iter()
        .flat_map(|m| &m.content)
        .map(|content| match content {
            Content::Text(text) => text.len(),
            Content::ToolCall(call) => call.name.len() + call.arguments.to_json_text().len(),
            Content::ToolResult(result) => result.content.len(),
        })
        .sum();
    (system + tools + messages).div_ceil(CHARS_PER_TOKEN)
}

/// Elides old tool output until the request fits `budget` tokens (or nothing is left to
/// elide). The last two messages stay whole: the model is acting on them.
pub fn fit(request: &mut Request, budget: usize) {
    let keep_from = request.messages.len().saturating_sub(2);
    for index in 1..keep_from {
        if estimate(request) <= budget {
            return;
        }
        for content in &mut request.messages[index].content {
            if let Content::ToolResult(result) = content
                && result.content.len() > WORTH_ELIDING
            {
                result.content = format!(
                    "[{} characters of older tool output elided to stay within the context window]",
                    result.content.len()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deft_llm::{Message, ToolResult};

    #[test]
    fn old_tool_output_goes_first_and_the_task_stays() {
        let mut request = Request::new("system", vec![Message::user("the task, never cut")]);
        for n in 0..6 {
            request
                .messages
                .push(Message::tool_results(vec![ToolResult {
                    call_id: format!("c{n}"),
                    content: "x".repeat(3000),
                    is_error: false,
                }]));
        }
        let before = estimate(&request);
        fit(&mut request, before / 2);
        assert!(
            estimate(&request) <= before / 2,
            "{} > {}",
            estimate(&request),
            before / 2
        );
        assert_eq!(request.messages[0], Message::user("the task, never cut"));
        let last = &request.messages[6].content[0];
        assert!(
            matches!(last, Content::ToolResult(r) if r.content.len() == 3000),
            "the newest output stays whole"
        );
        let first = &request.messages[1].content[0];
        assert!(
            matches!(first, Content::ToolResult(r) if r.content.contains("elided")),
            "the oldest goes first"
        );
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;
    use deft_llm::Message;

    #[test]
    fn a_request_that_cannot_be_made_to_fit_stays_over_the_budget() {
        let mut request = Request::new("s".repeat(9000), vec![Message::user("task")]);
        fit(&mut request, 1000);
        assert!(
            estimate(&request) > 1000,
            "nothing it may cut is there to cut"
        );
    }
}
