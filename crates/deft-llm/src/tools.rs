//! Keeping tool calls usable: a call with malformed arguments or to an unknown tool is shown
//! back to the model as an error result, a bounded number of times in a row, then reported.

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::client::{Completion, ModelClient};
use crate::conversation::{Message, Request, ToolArguments, ToolCall, ToolResult, ToolSpec};
use crate::error::ModelError;

/// What is wrong with one call, in words for the model; `None` when nothing is.
pub fn problem(call: &ToolCall, tools: &[ToolSpec]) -> Option<String> {
    let Some(tool) = tools.iter().find(|tool| tool.name == call.name) else {
        let names: Vec<&str> = tools.iter().map(|tool| tool.name.as_str()).collect();
        return Some(format!(
            "there is no tool named `{}`; the tools are: {}",
            call.name,
            names.join(", ")
        ));
    };
    let arguments = match &call.arguments {
        ToolArguments::Valid(arguments) => arguments,
        ToolArguments::Malformed { error, .. } => {
            return Some(format!(
                "the arguments of `{}` are not a valid JSON object ({error}); call it again with valid JSON",
                call.name
            ));
        }
    };
    let missing: Vec<&str> = tool.input_schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|field| arguments.get(*field).is_none())
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "`{}` needs the argument(s) {}; call it again with them",
            call.name,
            missing.join(", ")
        ));
    }
    None
}

/// Calls the model until an answer's tool calls are all usable. Each unusable answer is
/// added to `request` with an error result for every call in it, and the model tries again;
/// after `policy.max_malformed_tool_calls` unusable answers in a row, gives up.
pub async fn complete_with_usable_tool_calls(
    client: &ModelClient,
    request: &mut Request,
    cancel: &CancellationToken,
) -> Result<Completion, ModelError> {
    let mut failures = 0;
    loop {
        let completion = client.complete(request, cancel).await?;
        let calls: Vec<&ToolCall> = completion.response.tool_calls().collect();
        let problems: Vec<(String, Option<String>)> = calls
            .iter()
            .map(|call| (call.id.clone(), problem(call, &request.tools)))
            .collect();
        let Some(detail) = problems.iter().find_map(|(_, problem)| problem.clone()) else {
            return Ok(completion);
        };
        failures += 1;
        tracing::warn!(failures, detail = %detail, "the model sent an unusable tool call");
        if failures > client.policy.max_malformed_tool_calls {
            return Err(ModelError::MalformedToolCalls {
                attempts: failures,
                detail,
            });
        }
        request.messages.push(completion.response.to_message());
        let results = problems
            .into_iter()
            .map(|(call_id, problem)| ToolResult {
                call_id,
                content: problem.unwrap_or_else(|| "not run, because another call in the same turn was malformed; call it again if it is still needed".into()),
                is_error: true,
            })
            .collect();
        request.messages.push(Message::tool_results(results));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tools() -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "bash".into(),
            description: "run".into(),
            input_schema: json!({"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}),
        }]
    }

    fn call(name: &str, raw: &str) -> ToolCall {
        ToolCall {
            id: "c1".into(),
            name: name.into(),
            arguments: ToolArguments::parse(raw),
        }
    }

    #[test]
    fn problems_are_named_for_the_model() {
        assert_eq!(
            problem(&call("bash", r#"{"command": "ls"}"#), &tools()),
            None
        );
        assert_eq!(
            problem(&call("sh", "{}"), &tools()).unwrap(),
            "there is no tool named `sh`; the tools are: bash"
        );
        assert!(
            problem(&call("bash", r#"{"command": "#), &tools())
                .unwrap()
                .starts_with("the arguments of `bash` are not a valid JSON object")
        );
        assert_eq!(
            problem(&call("bash", "{}"), &tools()).unwrap(),
            "`bash` needs the argument(s) command; call it again with them"
        );
        assert!(
            problem(&call("bash", "[1]"), &tools())
                .unwrap()
                .contains("must be a JSON object, not an array")
        );
    }
}
