//! The walker's groups and cards, from small logs written out event by event.

use super::*;
use deft_core::{TaskId, Timestamp};
use serde_json::{Value, json};

/// A task's log, one event a second: `(kind, data)` each.
fn events(list: &[(EventKind, Value)]) -> Vec<Event> {
    list.iter()
        .enumerate()
        .map(|(index, (kind, data))| Event {
            seq: index as i64 + 1,
            task_id: TaskId::from_stored("t".into()),
            at: Timestamp::from_unix_millis(1_764_424_987_000 + index as i64 * 1000),
            kind: *kind,
            data: data.clone(),
        })
        .collect()
}

fn step(step: &str, status: &str, index: Option<usize>) -> (EventKind, Value) {
    let mut data = json!({"step": step, "status": status});
    if let Some(index) = index {
        data["index"] = json!(index);
    }
    (EventKind::Step, data)
}

fn call(id: &str, name: &str, arguments: Value) -> (EventKind, Value) {
    (
        EventKind::ToolCall,
        json!({"id": id, "name": name, "arguments": arguments}),
    )
}

fn result(id: &str, failed: bool, content: &str) -> (EventKind, Value) {
    (
        EventKind::ToolResult,
        json!({"id": id, "is_error": failed, "content": content}),
    )
}

fn state(from: &str, to: &str, attention: Value) -> (EventKind, Value) {
    (
        EventKind::StateChanged,
        json!({"from": from, "to": to, "attention": attention}),
    )
}

fn model() -> (EventKind, Value) {
    (
        EventKind::ModelCall,
        json!({"role": "executor", "model": "m", "input_tokens": 100, "output_tokens": 20}),
    )
}

/// A task that plans two steps, runs a command in the first, asks in the second, and is
/// answered.
fn two_steps() -> Vec<Event> {
    events(&[
        (
            EventKind::TaskCreated,
            json!({"description": "Add a greeting"}),
        ),
        state("queued", "in_progress", Value::Null),
        step("environment", "started", None),
        (
            EventKind::Network,
            json!({"host": "example.org", "port": 443, "allowed": false, "rule": "not allowed"}),
        ),
        step("environment", "done", None),
        step("analysis", "started", None),
        step("analysis", "done", None),
        step("planning", "started", None),
        model(),
        call(
            "p",
            "submit_plan",
            json!({"steps": ["Write it", "Check it"]}),
        ),
        result("p", false, "plan recorded"),
        (
            EventKind::Plan,
            json!({"requirements": [], "acceptance_criteria": [], "steps": ["Write it", "Check it"]}),
        ),
        step("planning", "done", None),
        step("execution", "started", Some(0)),
        model(),
        call(
            "c1",
            "bash",
            json!({"command": "printf '\\033[31mred\\033[0m <script>'"}),
        ),
        result(
            "c1",
            false,
            "\u{1b}[31mred\u{1b}[0m <script>\n[exit code: 0]",
        ),
        model(),
        call(
            "e1",
            "str_replace_based_edit_tool",
            json!({"command": "create", "path": "g/greeting.txt", "file_text": "hello\n"}),
        ),
        result("e1", false, "created g/greeting.txt"),
        call("c2", "bash", json!({"command": "false"})),
        result("c2", true, "[exit code: 1]"),
        step("execution", "verified", Some(0)),
        step("execution", "started", Some(1)),
        model(),
        call(
            "q",
            "ask_user",
            json!({"question": "Should it be **bold**?"}),
        ),
        (
            EventKind::Question,
            json!({"question": "Should it be **bold**?"}),
        ),
        state(
            "in_progress",
            "needs_attention",
            json!({"kind": "question", "message": "Should it be **bold**?"}),
        ),
        (
            EventKind::UserMessage,
            json!({"kind": "answer", "message": "Yes"}),
        ),
        state("needs_attention", "queued", Value::Null),
    ])
}

fn walked(events: &[Event]) -> Walker {
    let mut walker = Walker::new(Vec::new());
    for event in events {
        walker.feed(event);
    }
    walker
}

#[test]
fn events_group_by_step_with_the_setup_as_one_environment_group() {
    let (groups, first) = walked(&two_steps()).view(None, usize::MAX);
    let titles: Vec<&str> = groups.iter().map(|g| g.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "Environment",
            "Planning",
            "Step 1: Write it",
            "Step 2: Check it"
        ]
    );
    assert_eq!(first, Some(1));
    // Finished steps are folded; the current one is open and says where the task is.
    let folded: Vec<bool> = groups.iter().map(|g| g.open).collect();
    assert_eq!(folded, [false, false, false, true]);
    assert_eq!(groups[2].status, "done");
    assert_eq!(groups[3].status, "queued");
    // Model calls are counted in the heading, not shown as cards.
    assert_eq!((groups[2].model_calls, groups[2].tokens), (2, 240));
}

#[test]
fn a_tool_call_and_its_result_are_one_card_with_exit_status_and_time() {
    let (groups, _) = walked(&two_steps()).view(None, usize::MAX);
    let step = &groups[2];
    let cards: Vec<(&str, &str)> = step
        .cards
        .iter()
        .map(|c| (c.label, c.title.as_str()))
        .collect();
    assert_eq!(
        cards,
        [
            ("Command", "$ printf '\\033[31mred\\033[0m <script>'"),
            ("Edit", "create g/greeting.txt"),
            ("Command", "$ false"),
        ]
    );
    let command = &step.cards[0];
    let exit = command.exit.as_ref().unwrap();
    assert_eq!((exit.text.as_str(), exit.ok), ("exit 0", true));
    assert_eq!(command.duration.as_deref(), Some("1.0 s"));
    let Some(detail) = &command.detail else {
        panic!("output is folded in the card")
    };
    assert_eq!(
        detail.html(),
        "<span class=\"ansi-red\">red</span> &lt;script&gt;\n[exit code: 0]"
    );
    // The new file keeps its diff; the failed command is an error.
    assert!(matches!(
        step.cards[1].detail,
        Some(log::Detail::Diff { .. })
    ));
    assert!(!step.cards[2].exit.as_ref().unwrap().ok);
    assert!(step.cards[2].has_tag("errors") && step.cards[2].has_tag("commands"));
    // The plan is one card, in planning, with its steps.
    assert_eq!(groups[1].cards.len(), 1);
    assert_eq!(groups[1].cards[0].title, "2 steps planned");
}

#[test]
fn the_question_is_one_card_that_takes_its_answer() {
    let events = two_steps();
    let mut walker = walked(&events[..28]);
    walker.set_state(TaskState::NeedsAttention);
    let (groups, _) = walker.view(None, usize::MAX);
    let last = groups.last().unwrap();
    let questions: Vec<&Card> = last.cards.iter().filter(|c| c.question.is_some()).collect();
    assert_eq!(questions.len(), 1, "{:?}", last.cards);
    let question = questions[0].question.as_ref().unwrap();
    assert!(question.waiting, "the summary shows a waiting question");
    assert_eq!(last.status, "waiting");
    // The state change does not say the question again.
    let changed = last.cards.iter().find(|c| c.class == "state").unwrap();
    assert_eq!(changed.title, "in progress → needs attention");

    let (groups, _) = walked(&events).view(None, usize::MAX);
    let question = groups[3]
        .cards
        .iter()
        .find_map(|c| c.question.as_ref())
        .unwrap();
    assert!(!question.waiting);
    assert_eq!(
        question.html,
        "<p>Should it be <strong>bold</strong>?</p>\n"
    );
    assert_eq!(question.answer.as_deref(), Some("Yes"));
    assert_eq!(
        groups[3]
            .cards
            .iter()
            .filter(|c| c.label == "Answer")
            .count(),
        0
    );
}

#[test]
fn filters_keep_their_cards_and_open_the_steps_that_have_some() {
    let check = |show: Show, expect: &[&str]| {
        let (groups, _) = walked(&two_steps()).view(Some(show), usize::MAX);
        let titles: Vec<&str> = groups
            .iter()
            .flat_map(|g| g.cards.iter().map(|c| c.title.as_str()))
            .collect();
        assert_eq!(titles, expect, "{show:?}");
        assert!(groups.iter().all(|g| g.open));
    };
    check(Show::Edits, &["create g/greeting.txt"]);
    check(
        Show::Commands,
        &["$ printf '\\033[31mred\\033[0m <script>'", "$ false"],
    );
    check(Show::Network, &["example.org:443 (not allowed)"]);
    check(Show::Errors, &["example.org:443 (not allowed)", "$ false"]);
}

#[test]
fn a_heavy_log_keeps_its_newest_steps_and_cuts_outputs_with_a_link_to_the_whole() {
    let mut list = vec![step("execution", "started", Some(0))];
    for n in 0..200 {
        let id = format!("c{n}");
        list.push(call(&id, "bash", json!({"command": "cargo test"})));
        list.push(result(
            &id,
            true,
            &format!("{}\n[exit code: 101]", "error line\n".repeat(400)),
        ));
    }
    list.push(step("execution", "started", Some(1)));
    list.push(call("last", "bash", json!({"command": "ls"})));
    list.push(result("last", false, &"x".repeat(5000)));
    let (groups, first) = walked(&events(&list)).view(None, 60_000);
    let weight: usize = groups.iter().flat_map(|g| &g.cards).map(Card::weight).sum();
    assert!(weight < 60_000, "{weight}");
    assert_eq!(
        groups.len(),
        1,
        "the older step is left for the earlier page"
    );
    assert_eq!(first, Some(402));
    let card = &groups[0].cards[0];
    let Some(log::Detail::Output { text, .. }) = &card.detail else {
        panic!()
    };
    assert_eq!(text.chars().count(), OPEN_OUTPUT);
    assert_eq!(card.full, Some(404), "the link leads to the result's event");
}

#[test]
fn live_changes_name_the_card_and_the_heading_they_touch() {
    let events = two_steps();
    let mut walker = walked(&events[..15]);
    // The command's call is a new card in step 1; its result changes that same card.
    assert_eq!(walker.feed(&events[15]), [Change::Card(2, 0)]);
    assert_eq!(walker.feed(&events[16]), [Change::Card(2, 0)]);
    assert_eq!(walker.feed(&events[17]), [Change::Group(2)]);
    // A new step: the old heading (now done) and the new one.
    let changes = walker.feed(&events[23]);
    assert_eq!(changes, [Change::Group(2), Change::Group(3)]);
    walker.settle(2);
    assert_eq!(
        (walker.groups[2].status, walker.groups[2].open),
        ("done", false)
    );
}
