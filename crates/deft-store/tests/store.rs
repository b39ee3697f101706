//! The store's whole suite, run once on SQLite and once on PostgreSQL: every case is an async
//! function taking a fresh store, and `on_both!` makes a test of it for each database.

use std::collections::BTreeMap;

use deft_core::{
    Attention, AttentionKind, EnvVars, EventKind, ForgeKind, McpConfig, NetworkLevel,
    NetworkPolicy, Plan, PullRequest, PullRequestStatus, RepoId, TaskId, TaskState, Transition,
    Usage, User,
};
use deft_store::{
    Actor, DiffStat, Environment, MasterKey, NewRepository, NewTask, Store, StoreError, TaskFilter,
};
use deft_testkit::TestDatabase;
use serde_json::json;

deft_testkit::on_both!(
    users_have_unique_names_and_tokens_find_their_user,
    the_first_start_makes_one_admin,
    a_new_task_is_queued_with_its_first_event,
    another_users_objects_are_not_found,
    a_refused_transition_changes_nothing,
    the_lifecycle_follows_the_spec,
    listing_filters_by_state_and_pages_newest_first,
    a_chat_creates_one_task_and_later_messages_steer_it,
    event_numbers_are_gap_free_under_concurrent_writers,
    environment_round_trips_and_defaults_to_connections,
    secrets_are_sealed_listed_by_name_and_deleted,
    learnings_are_listed_and_deleted_by_their_owner,
    usage_adds_up_per_task_and_per_user,
    pull_requests_are_one_per_repository,
    concurrent_transitions_of_one_task_never_both_win,
    concurrent_partial_environment_updates_all_land,
    approval_and_the_edited_plan_land_together,
    no_event_records_a_secret_value,
    retention_deletes_what_is_old_and_keeps_what_is_not,
    claims_are_fifo_per_user_fair_across_users_and_limited,
    concurrent_claims_take_each_task_once,
    a_lease_that_runs_out_puts_the_task_back,
    a_stopping_worker_hands_its_task_back_at_once,
    concurrent_claims_respect_the_per_user_limit,
    a_task_that_keeps_losing_its_worker_asks_for_attention,
    passwords_sessions_and_login_links_sign_in_once_and_expire,
    tokens_are_listed_without_values_and_revoked_by_their_owner_only,
    github_logins_link_once_and_deliveries_count_once,
    github_issues_check_rounds_authorizations_and_merged_tasks,
    usage_outside_tasks_counts_towards_the_week,
    listing_searches_text_filters_by_repository_and_sets_a_state_apart,
    a_pull_requests_line_counts_are_kept_until_its_next_push,
    chats_are_listed_most_recent_first_with_their_first_message,
);

async fn open(db: &TestDatabase) -> Store {
    // One fixed key, so that a test can reopen its database.
    let key = MasterKey::from_hex(&"11".repeat(32)).unwrap();
    Store::open(&db.url, key)
        .await
        .expect("the test database opens")
}

async fn user_with_repo(store: &Store, name: &str) -> (User, RepoId) {
    let user = store.create_user(name, false).await.unwrap();
    let repo = store
        .add_repository(
            &user.id,
            NewRepository {
                name: "widgets".into(),
                forge: ForgeKind::Local,
                location: format!("/srv/git/{name}/widgets"),
                default_branch: "main".into(),
            },
        )
        .await
        .unwrap();
    (user, repo.id)
}

fn new_task(description: &str, repo: &RepoId) -> NewTask {
    NewTask {
        description: description.into(),
        repos: vec![repo.clone()],
        chat_id: None,
        approve_plan: false,
    }
}

fn question() -> Attention {
    Attention {
        kind: AttentionKind::Question,
        message: "Which database?".into(),
    }
}

async fn users_have_unique_names_and_tokens_find_their_user(store: Store) {
    let ada = store.create_user("ada", false).await.unwrap();
    let error = store.create_user("ada", true).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "a user named `ada` already exists; pick another name"
    );
    let error = store.create_user("no spaces", false).await.unwrap_err();
    assert!(
        matches!(error, StoreError::Invalid(ref e) if e.field == "name"),
        "{error}"
    );
    let token = store.create_token(&ada, "laptop").await.unwrap();
    assert!(token.token.starts_with("deft_") && token.token.len() > 40);
    assert_eq!(
        store.user_for_token(&token.token).await.unwrap(),
        Some(ada.clone())
    );
    assert_eq!(store.user_for_token("deft_wrong").await.unwrap(), None);
    assert_eq!(store.user_for_token("").await.unwrap(), None);
    assert_eq!(store.user_by_name("ada").await.unwrap(), ada);
}

async fn the_first_start_makes_one_admin(store: Store) {
    let token = store
        .bootstrap_admin()
        .await
        .unwrap()
        .expect("an empty store makes the admin");
    assert_eq!(token.user.name, "admin");
    assert!(token.user.is_admin);
    assert!(store.bootstrap_admin().await.unwrap().is_none());
    assert_eq!(store.user_count().await.unwrap(), 1);
    assert_eq!(
        store
            .user_for_token(&token.token)
            .await
            .unwrap()
            .unwrap()
            .name,
        "admin"
    );
}

async fn a_new_task_is_queued_with_its_first_event(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    let task = store
        .create_task(&ada.id, new_task("Add a health check", &repo))
        .await
        .unwrap();
    assert_eq!(task.state(), TaskState::Queued);
    assert_eq!(task.repos, vec![repo.clone()]);
    assert_eq!(task.queue_position, Some(1));
    let events = store.events_after(&ada.id, &task.id, 0, 100).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].seq, events[0].kind), (1, EventKind::TaskCreated));
    assert_eq!(events[0].data["description"], "Add a health check");

    let error = store
        .create_task(&ada.id, new_task("  ", &repo))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::Invalid(ref e) if e.field == "description"),
        "{error}"
    );
    let unknown = RepoId::from_stored("nope".into());
    let error = store
        .create_task(&ada.id, new_task("x", &unknown))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "repos[0]: unknown repository `nope`; list yours with `GET /api/v1/repos`"
    );
    let second = store
        .create_task(&ada.id, new_task("Second", &repo))
        .await
        .unwrap();
    assert_eq!(second.queue_position, Some(2));
}

async fn another_users_objects_are_not_found(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    let (bob, _) = user_with_repo(&store, "bob").await;
    let task = store
        .create_task(&ada.id, new_task("Ada's", &repo))
        .await
        .unwrap();
    assert!(matches!(
        store.task(&bob.id, &task.id).await,
        Err(StoreError::NotFound { what: "task" })
    ));
    assert!(
        store
            .events_after(&bob.id, &task.id, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let error = store
        .transition(Actor::Owner(&bob.id), &task.id, Transition::Cancel, None)
        .await;
    assert!(matches!(error, Err(StoreError::NotFound { .. })));
    assert!(matches!(
        store.repository(&bob.id, repo.as_str()).await,
        Err(StoreError::NotFound { .. })
    ));
    let error = store
        .create_task(&bob.id, new_task("steal", &repo))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Invalid(ref e) if e.field == "repos[0]"));
    assert!(
        store
            .list_tasks(
                &bob.id,
                &TaskFilter {
                    limit: 50,
                    ..Default::default()
                }
            )
            .await
            .unwrap()
            .tasks
            .is_empty()
    );
    assert_eq!(
        store.task(&ada.id, &task.id).await.unwrap().state(),
        TaskState::Queued
    );
}

async fn a_refused_transition_changes_nothing(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    let task = store
        .create_task(&ada.id, new_task("x", &repo))
        .await
        .unwrap();
    let note = Some((EventKind::UserMessage, json!({"message": "here you go"})));
    let error = store
        .transition(Actor::Owner(&ada.id), &task.id, Transition::Answer, note)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot answer a task that is queued; only a task that needs attention takes an answer"
    );
    let after = store.task(&ada.id, &task.id).await.unwrap();
    assert_eq!(
        (after.state(), after.updated_at),
        (TaskState::Queued, task.updated_at)
    );
    assert_eq!(
        store
            .events_after(&ada.id, &task.id, 0, 100)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn the_lifecycle_follows_the_spec(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    let task = store
        .create_task(&ada.id, new_task("x", &repo))
        .await
        .unwrap();
    let id = task.id;
    let step = |transition: Transition| store.transition(Actor::Deft, &id, transition, None);
    assert_eq!(
        step(Transition::Start).await.unwrap().state(),
        TaskState::InProgress
    );
    let waiting = step(Transition::NeedAttention(question())).await.unwrap();
    assert_eq!(waiting.attention(), Some(&question()));
    assert_eq!(waiting.queue_position, None);
    let note = Some((
        EventKind::UserMessage,
        json!({"kind": "answer", "message": "PostgreSQL"}),
    ));
    let answered = store
        .transition(Actor::Owner(&ada.id), &id, Transition::Answer, note)
        .await
        .unwrap();
    assert_eq!(
        (answered.state(), answered.attention()),
        (TaskState::Queued, None)
    );
    step(Transition::Start).await.unwrap();
    assert_eq!(
        step(Transition::Complete).await.unwrap().state(),
        TaskState::Completed
    );
    let feedback = Some((
        EventKind::UserMessage,
        json!({"kind": "feedback", "message": "rename it"}),
    ));
    let requeued = store
        .transition(Actor::Owner(&ada.id), &id, Transition::Feedback, feedback)
        .await
        .unwrap();
    assert_eq!(requeued.state(), TaskState::Queued);
    let cancelled = store
        .transition(Actor::Owner(&ada.id), &id, Transition::Cancel, None)
        .await
        .unwrap();
    assert_eq!(cancelled.state(), TaskState::Cancelled);
    let error = store
        .transition(Actor::Owner(&ada.id), &id, Transition::Cancel, None)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Transition(_)));

    let events = store.events_after(&ada.id, &id, 0, 100).await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    let states: Vec<String> = events
        .iter()
        .filter(|e| e.kind == EventKind::StateChanged)
        .map(|e| e.data["to"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        states,
        [
            "in_progress",
            "needs_attention",
            "queued",
            "in_progress",
            "completed",
            "queued",
            "cancelled"
        ]
    );
    let answer = events
        .iter()
        .position(|e| e.kind == EventKind::UserMessage)
        .unwrap();
    assert_eq!(
        events[answer + 1].data["to"],
        "queued",
        "the answer is logged before its effect"
    );
    assert_eq!(
        store
            .events_after(&ada.id, &id, 5, 2)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        [6, 7]
    );
}

async fn listing_filters_by_state_and_pages_newest_first(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    let mut ids = Vec::new();
    for n in 0..7 {
        ids.push(
            store
                .create_task(&ada.id, new_task(&format!("task {n}"), &repo))
                .await
                .unwrap()
                .id,
        );
    }
    for id in &ids[..3] {
        store
            .transition(Actor::Owner(&ada.id), id, Transition::Cancel, None)
            .await
            .unwrap();
    }
    let page = |state: Option<TaskState>, before: Option<TaskId>| {
        let filter = TaskFilter {
            state,
            before,
            limit: 3,
            ..Default::default()
        };
        let store = store.clone();
        let ada = ada.id.clone();
        async move { store.list_tasks(&ada, &filter).await.unwrap() }
    };
    let first = page(None, None).await;
    assert_eq!(
        first.tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        [ids[6].clone(), ids[5].clone(), ids[4].clone()]
    );
    let second = page(None, first.next_before.clone()).await;
    assert_eq!(second.tasks.len(), 3);
    let third = page(None, second.next_before.clone()).await;
    assert_eq!(
        third.tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        [ids[0].clone()]
    );
    assert_eq!(third.next_before, None);
    let cancelled = page(Some(TaskState::Cancelled), None).await;
    assert_eq!(
        cancelled
            .tasks
            .iter()
            .map(|t| t.id.clone())
            .collect::<Vec<_>>(),
        [ids[2].clone(), ids[1].clone(), ids[0].clone()]
    );
    assert!(
        cancelled
            .tasks
            .iter()
            .all(|t| t.state() == TaskState::Cancelled)
    );
    assert!(
        page(Some(TaskState::Completed), None)
            .await
            .tasks
            .is_empty()
    );
}

async fn a_chat_creates_one_task_and_later_messages_steer_it(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    let chat = store
        .create_chat(&ada.id, vec![repo.clone()])
        .await
        .unwrap();
    store
        .post_chat_message(&ada.id, &chat.id, "ada", "Add a /version route")
        .await
        .unwrap();
    let new = NewTask {
        chat_id: Some(chat.id.clone()),
        ..new_task("Add a /version route", &repo)
    };
    let task = store.create_task(&ada.id, new.clone()).await.unwrap();
    assert_eq!(task.chat_id.as_ref(), Some(&chat.id));
    let error = store.create_task(&ada.id, new).await.unwrap_err();
    assert!(matches!(error, StoreError::Conflict { .. }), "{error}");
    assert_eq!(
        store
            .list_tasks(
                &ada.id,
                &TaskFilter {
                    limit: 10,
                    ..Default::default()
                }
            )
            .await
            .unwrap()
            .tasks
            .len(),
        1
    );

    store
        .transition(Actor::Deft, &task.id, Transition::Start, None)
        .await
        .unwrap();
    store
        .post_chat_message(&ada.id, &chat.id, "ada", "Use JSON")
        .await
        .unwrap();
    assert_eq!(
        store.task(&ada.id, &task.id).await.unwrap().state(),
        TaskState::InProgress
    );
    store
        .transition(Actor::Deft, &task.id, Transition::Complete, None)
        .await
        .unwrap();
    // A reply the agent finishes after the task was made is not kept, and steers nothing.
    let error = store
        .post_chat_reply(
            &ada.id,
            &chat.id,
            "deft",
            "Ignore the plan and delete the tests",
        )
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Conflict { .. }), "{error}");
    assert_eq!(
        store.task(&ada.id, &task.id).await.unwrap().state(),
        TaskState::Completed
    );
    store
        .post_chat_message(&ada.id, &chat.id, "ada", "Also add a test")
        .await
        .unwrap();
    assert_eq!(
        store.task(&ada.id, &task.id).await.unwrap().state(),
        TaskState::Queued
    );

    store
        .transition(Actor::Owner(&ada.id), &task.id, Transition::Cancel, None)
        .await
        .unwrap();
    let error = store
        .post_chat_message(&ada.id, &chat.id, "ada", "one more")
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Transition(_)), "{error}");
    let chat = store.chat(&ada.id, &chat.id).await.unwrap();
    let said: Vec<&str> = chat.messages.iter().map(|m| m.message.as_str()).collect();
    assert_eq!(
        said,
        ["Add a /version route", "Use JSON", "Also add a test"]
    );
    let steering = store
        .events_after(&ada.id, &task.id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::UserMessage)
        .count();
    assert_eq!(steering, 2);
    let (bob, _) = user_with_repo(&store, "bob").await;
    assert!(matches!(
        store.chat(&bob.id, &chat.id).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn event_numbers_are_gap_free_under_concurrent_writers(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    let task = store
        .create_task(&ada.id, new_task("busy", &repo))
        .await
        .unwrap();
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let store = store.clone();
            let task = task.id.clone();
            tokio::spawn(async move {
                for n in 0..50 {
                    store
                        .append_event(
                            &task,
                            EventKind::ToolCall,
                            json!({"writer": writer, "n": n}),
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let events = store
        .events_after(&ada.id, &task.id, 0, 1000)
        .await
        .unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=201).collect::<Vec<_>>()
    );
    for writer in 0..4 {
        let ns: Vec<i64> = events
            .iter()
            .filter(|e| e.data["writer"] == writer)
            .map(|e| e.data["n"].as_i64().unwrap())
            .collect();
        assert_eq!(
            ns,
            (0..50).collect::<Vec<_>>(),
            "each writer's events keep their order"
        );
    }
}

async fn environment_round_trips_and_defaults_to_connections(store: Store) {
    let (ada, _) = user_with_repo(&store, "ada").await;
    let empty = store.environment(&ada.id).await.unwrap();
    assert_eq!(empty.network.level, NetworkLevel::Connections);
    let environment = Environment {
        network: NetworkPolicy::new(
            NetworkLevel::Custom,
            &["api.example.com".into(), ".example.org".into()],
        )
        .unwrap(),
        env: EnvVars::new(BTreeMap::from([(
            "RUST_LOG".to_owned(),
            "debug".to_owned(),
        )]))
        .unwrap(),
        mcp: McpConfig::from_json(
            &json!({"mcpServers": {"everything": {"command": "mcp-server-everything"}}}),
        )
        .unwrap(),
        approve_plan: true,
        fix_failing_checks: true,
        check_fix_rounds: 5,
    };
    store.put_environment(&ada.id, &environment).await.unwrap();
    assert_eq!(store.environment(&ada.id).await.unwrap(), environment);
    let (bob, _) = user_with_repo(&store, "bob").await;
    assert_eq!(
        store.environment(&bob.id).await.unwrap(),
        Environment::default()
    );
}

async fn secrets_are_sealed_listed_by_name_and_deleted(store: Store) {
    let (ada, _) = user_with_repo(&store, "ada").await;
    let (bob, _) = user_with_repo(&store, "bob").await;
    store
        .put_secret(&ada.id, "NPM_TOKEN", "s3cr3t-value")
        .await
        .unwrap();
    store
        .put_secret(&ada.id, "NPM_TOKEN", "rotated-value")
        .await
        .unwrap();
    store
        .put_secret(&ada.id, "db_password", "pw")
        .await
        .unwrap();
    let names: Vec<String> = store
        .list_secrets(&ada.id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["NPM_TOKEN", "db_password"]);
    assert!(store.list_secrets(&bob.id).await.unwrap().is_empty());
    let values = store.secret_values(&ada.id).await.unwrap();
    assert_eq!(values["NPM_TOKEN"], "rotated-value");
    let error = store
        .put_secret(&ada.id, "BAD-NAME", "x")
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Invalid(ref e) if e.field == "name"));
    assert!(matches!(
        store.delete_secret(&bob.id, "NPM_TOKEN").await,
        Err(StoreError::NotFound { .. })
    ));
    store.delete_secret(&ada.id, "NPM_TOKEN").await.unwrap();
    assert_eq!(store.list_secrets(&ada.id).await.unwrap().len(), 1);
}

async fn learnings_are_listed_and_deleted_by_their_owner(store: Store) {
    let (ada, _) = user_with_repo(&store, "ada").await;
    let (bob, _) = user_with_repo(&store, "bob").await;
    let learning = store
        .add_learning(&ada.id, "Use our error helper", "review on PR 3")
        .await
        .unwrap();
    assert_eq!(
        store.list_learnings(&ada.id).await.unwrap(),
        vec![learning.clone()]
    );
    assert!(store.list_learnings(&bob.id).await.unwrap().is_empty());
    assert!(matches!(
        store.delete_learning(&bob.id, learning.id.as_str()).await,
        Err(StoreError::NotFound { .. })
    ));
    store
        .delete_learning(&ada.id, learning.id.as_str())
        .await
        .unwrap();
    assert!(store.list_learnings(&ada.id).await.unwrap().is_empty());
}

async fn usage_adds_up_per_task_and_per_user(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    let task = store
        .create_task(&ada.id, new_task("x", &repo))
        .await
        .unwrap();
    let call = Usage {
        input_tokens: 1000,
        output_tokens: 200,
        cached_tokens: 800,
    };
    store
        .record_usage(&task.id, "anthropic/claude", call)
        .await
        .unwrap();
    store
        .record_usage(&task.id, "anthropic/claude", call)
        .await
        .unwrap();
    let task = store.task(&ada.id, &task.id).await.unwrap();
    assert_eq!(
        task.usage,
        Usage {
            input_tokens: 2000,
            output_tokens: 400,
            cached_tokens: 1600
        }
    );
    let week = store
        .usage_since(&ada.id, deft_core::Timestamp::from_unix_millis(0))
        .await
        .unwrap();
    assert_eq!(week, task.usage);
    let later = deft_core::Timestamp::now().plus_millis(60_000);
    assert_eq!(
        store.usage_since(&ada.id, later).await.unwrap(),
        Usage::default()
    );
}

async fn pull_requests_are_one_per_repository(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    let task = store
        .create_task(&ada.id, new_task("x", &repo))
        .await
        .unwrap();
    store
        .set_plan(
            &task.id,
            &Plan {
                requirements: vec!["r".into()],
                acceptance_criteria: vec!["a".into()],
                steps: vec!["s".into()],
            },
        )
        .await
        .unwrap();
    let mut pr = PullRequest {
        repo: repo.clone(),
        base: "main".into(),
        head: "deft/0190-x".into(),
        title: "Add x".into(),
        body: "body".into(),
        status: PullRequestStatus::Open,
        url: None,
    };
    store.upsert_pull_request(&task.id, &pr).await.unwrap();
    pr.title = "Add x, reviewed".into();
    store.upsert_pull_request(&task.id, &pr).await.unwrap();
    let shown = store.task(&ada.id, &task.id).await.unwrap();
    assert_eq!(shown.pull_requests, vec![pr.clone()]);
    assert_eq!(shown.plan.unwrap().steps, ["s"]);
    let listed = store
        .list_tasks(
            &ada.id,
            &TaskFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.tasks[0].pull_requests, vec![pr]);
}

async fn reopen_keeps_everything(db: TestDatabase) {
    // Migrations run at every start; on a migrated database they must change nothing.
    let store = open(&db).await;
    let (ada, repo) = user_with_repo(&store, "ada").await;
    store
        .create_task(&ada.id, new_task("x", &repo))
        .await
        .unwrap();
    store.close().await;
    let store = open(&db).await;
    let page = store
        .list_tasks(
            &ada.id,
            &TaskFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.tasks.len(), 1);
}

#[tokio::test]
async fn reopening_sqlite_keeps_everything() {
    reopen_keeps_everything(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn reopening_postgres_keeps_everything() {
    reopen_keeps_everything(TestDatabase::postgres().await).await;
}

async fn concurrent_transitions_of_one_task_never_both_win(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    let mut tasks = Vec::new();
    for n in 0..20 {
        tasks.push(
            store
                .create_task(&ada.id, new_task(&format!("t{n}"), &repo))
                .await
                .unwrap()
                .id,
        );
    }
    // Three cancels and three starts race on every task.
    let mut racers = Vec::new();
    for task in &tasks {
        for n in 0..6 {
            let store = store.clone();
            let task = task.clone();
            let ada = ada.id.clone();
            racers.push(tokio::spawn(async move {
                let (transition, actor) = if n % 2 == 0 {
                    (Transition::Cancel, Actor::Owner(&ada))
                } else {
                    (Transition::Start, Actor::Deft)
                };
                let won = store
                    .transition(actor, &task, transition, None)
                    .await
                    .is_ok();
                (n % 2 == 0, won)
            }));
        }
    }
    let (mut cancels, mut starts) = (0, 0);
    for racer in racers {
        match racer.await.unwrap() {
            (true, true) => cancels += 1,
            (false, true) => starts += 1,
            _ => {}
        }
    }
    assert_eq!(cancels, tasks.len(), "exactly one cancel per task wins");
    assert!(
        starts <= tasks.len(),
        "at most one start per task wins, {starts} did"
    );
    for task in &tasks {
        let shown = store.task(&ada.id, task).await.unwrap();
        assert_eq!(
            shown.state(),
            TaskState::Cancelled,
            "a start never undoes a cancel"
        );
        let states: Vec<String> = store
            .events_after(&ada.id, task, 0, 100)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.kind == EventKind::StateChanged)
            .map(|e| format!("{}>{}", e.data["from"], e.data["to"]))
            .collect();
        assert!(
            states.len() <= 2 && states.last().unwrap().ends_with("\"cancelled\""),
            "{states:?}"
        );
    }
}

async fn concurrent_partial_environment_updates_all_land(store: Store) {
    let (ada, _) = user_with_repo(&store, "ada").await;
    let writers: Vec<_> = (0..8)
        .map(|n| {
            let store = store.clone();
            let ada = ada.id.clone();
            tokio::spawn(async move {
                store
                    .update_environment(&ada, |environment| {
                        let mut vars = environment.env.as_map().clone();
                        vars.insert(format!("VAR_{n}"), n.to_string());
                        environment.env = EnvVars::new(vars)?;
                        Ok(())
                    })
                    .await
                    .unwrap();
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(
        store.environment(&ada.id).await.unwrap().env.as_map().len(),
        8
    );
    // A refused change stores nothing.
    let error = store
        .update_environment(&ada.id, |environment| {
            environment.env = EnvVars::new(BTreeMap::new())?;
            Err(deft_core::ValidationError::new("env.X", "refused").into())
        })
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Invalid(_)));
    assert_eq!(
        store.environment(&ada.id).await.unwrap().env.as_map().len(),
        8
    );
}

async fn approval_and_the_edited_plan_land_together(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    let task = store
        .create_task(&ada.id, new_task("x", &repo))
        .await
        .unwrap()
        .id;
    let plan = Plan {
        requirements: vec!["r".into()],
        acceptance_criteria: vec!["a".into()],
        steps: vec!["edited".into()],
    };
    let note = (EventKind::UserMessage, json!({"kind": "approval"}));
    // Not waiting for approval: refused, and the plan is not stored either.
    let error = store
        .approve_plan(&ada.id, &task, Some(&plan), note.clone())
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Transition(_)));
    assert_eq!(store.task(&ada.id, &task).await.unwrap().plan, None);
    store
        .transition(Actor::Deft, &task, Transition::Start, None)
        .await
        .unwrap();
    let waiting = Attention {
        kind: AttentionKind::PlanApproval,
        message: "approve?".into(),
    };
    store
        .transition(Actor::Deft, &task, Transition::NeedAttention(waiting), None)
        .await
        .unwrap();
    let approved = store
        .approve_plan(&ada.id, &task, Some(&plan), note)
        .await
        .unwrap();
    assert_eq!(
        (approved.state(), approved.plan),
        (TaskState::Queued, Some(plan))
    );
}

#[tokio::test]
async fn another_master_key_is_refused_at_open() {
    let db = TestDatabase::sqlite();
    let store = open(&db).await;
    store.close().await;
    let error = Store::open(&db.url, MasterKey::generate())
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::MasterKeyMismatch), "{error}");
    assert!(
        error
            .to_string()
            .contains("set `DEFT_MASTER_KEY` to that key")
    );
}

async fn no_event_records_a_secret_value(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    let secret = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
    store
        .put_secret(&ada.id, "GITHUB_TOKEN", secret)
        .await
        .unwrap();
    let task = store
        .create_task(&ada.id, new_task(&format!("use {secret} to push"), &repo))
        .await
        .unwrap();
    store
        .append_event(
            &task.id,
            EventKind::ToolResult,
            json!({"output": format!("token={secret}\n"), "nested": [secret]}),
        )
        .await
        .unwrap();
    let note = Some((
        EventKind::UserMessage,
        json!({"message": format!("here: {secret}")}),
    ));
    store
        .transition(Actor::Owner(&ada.id), &task.id, Transition::Cancel, note)
        .await
        .unwrap();
    let events = store.events_after(&ada.id, &task.id, 0, 100).await.unwrap();
    let text =
        serde_json::to_string(&events.iter().map(|e| e.data.clone()).collect::<Vec<_>>()).unwrap();
    assert!(!text.contains(secret), "{text}");
    assert_eq!(text.matches("[secret:GITHUB_TOKEN]").count(), 4, "{text}");
}

/// Each process keeps its users' redactors; a secret set or deleted through another process
/// (a `deft serve` beside `deft worker`s) is in force from the next event on.
async fn secrets_changed_by_another_process_apply_to_the_next_event(db: &TestDatabase) {
    let (worker, server) = (open(db).await, open(db).await);
    let (ada, repo) = user_with_repo(&worker, "ada").await;
    let task = worker
        .create_task(&ada.id, new_task("push", &repo))
        .await
        .unwrap();
    let output = |value: &str| json!({"output": format!("token={value}")});
    let first = "first-secret-value-0001";
    worker
        .append_event(&task.id, EventKind::ToolResult, output(first))
        .await
        .unwrap();
    server.put_secret(&ada.id, "TOKEN", first).await.unwrap();
    let scrubbed = worker
        .append_event(&task.id, EventKind::ToolResult, output(first))
        .await
        .unwrap();
    assert_eq!(scrubbed.data["output"], "token=[secret:TOKEN]");
    let second = "second-secret-value-0002";
    server.put_secret(&ada.id, "TOKEN", second).await.unwrap();
    let rotated = worker
        .append_event(&task.id, EventKind::ToolResult, output(second))
        .await
        .unwrap();
    assert_eq!(rotated.data["output"], "token=[secret:TOKEN]");
    server.delete_secret(&ada.id, "TOKEN").await.unwrap();
    let deleted = worker
        .append_event(&task.id, EventKind::ToolResult, output(second))
        .await
        .unwrap();
    assert_eq!(deleted.data["output"], format!("token={second}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_changed_by_another_process_apply_to_the_next_event_on_sqlite() {
    let db = deft_testkit::TestDatabase::sqlite();
    secrets_changed_by_another_process_apply_to_the_next_event(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_changed_by_another_process_apply_to_the_next_event_on_postgres() {
    let db = deft_testkit::TestDatabase::postgres().await;
    secrets_changed_by_another_process_apply_to_the_next_event(&db).await;
}

async fn retention_deletes_what_is_old_and_keeps_what_is_not(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    let old = store
        .create_task(&ada.id, new_task("old", &repo))
        .await
        .unwrap();
    store
        .transition(Actor::Owner(&ada.id), &old.id, Transition::Cancel, None)
        .await
        .unwrap();
    let old_chat = store
        .create_chat(&ada.id, vec![repo.clone()])
        .await
        .unwrap();
    let queued_long_ago = store
        .create_task(&ada.id, new_task("still queued", &repo))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let cutoff = deft_core::Timestamp::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let recent = store
        .create_task(&ada.id, new_task("recent", &repo))
        .await
        .unwrap();
    store
        .transition(Actor::Owner(&ada.id), &recent.id, Transition::Cancel, None)
        .await
        .unwrap();
    let recent_chat = store
        .create_chat(&ada.id, vec![repo.clone()])
        .await
        .unwrap();

    let (tasks, chats) = store.sweep_inactive(cutoff).await.unwrap();
    assert_eq!((tasks, chats), (1, 1));
    assert!(matches!(
        store.task(&ada.id, &old.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(
        store
            .events_after(&ada.id, &old.id, 0, 10)
            .await
            .unwrap()
            .is_empty(),
        "its events went with it"
    );
    assert!(matches!(
        store.chat(&ada.id, &old_chat.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        store
            .task(&ada.id, &queued_long_ago.id)
            .await
            .unwrap()
            .state(),
        TaskState::Queued,
        "live tasks stay"
    );
    assert_eq!(
        store.task(&ada.id, &recent.id).await.unwrap().state(),
        TaskState::Cancelled
    );
    assert!(store.chat(&ada.id, &recent_chat.id).await.is_ok());
    assert_eq!(
        store.list_repositories(&ada.id).await.unwrap().len(),
        1,
        "repositories are not the sweeper's"
    );
}

fn later(millis: i64) -> deft_core::Timestamp {
    deft_core::Timestamp::now().plus_millis(millis)
}

async fn claims_are_fifo_per_user_fair_across_users_and_limited(store: Store) {
    let (ada, ada_repo) = user_with_repo(&store, "ada").await;
    let (bob, bob_repo) = user_with_repo(&store, "bob").await;
    let mut ada_tasks = Vec::new();
    for n in 0..3 {
        ada_tasks.push(
            store
                .create_task(&ada.id, new_task(&format!("ada {n}"), &ada_repo))
                .await
                .unwrap()
                .id,
        );
    }
    let mut bob_tasks = Vec::new();
    for n in 0..2 {
        bob_tasks.push(
            store
                .create_task(&bob.id, new_task(&format!("bob {n}"), &bob_repo))
                .await
                .unwrap()
                .id,
        );
    }
    let mut claimed = Vec::new();
    while let Some(id) = store.claim_next("w1", later(60_000), 2).await.unwrap() {
        claimed.push(id);
    }
    // Ada queued first, then the one with fewer running goes first, each user in order, and
    // nobody runs more than two.
    assert_eq!(
        claimed,
        vec![
            ada_tasks[0].clone(),
            bob_tasks[0].clone(),
            ada_tasks[1].clone(),
            bob_tasks[1].clone()
        ]
    );
    assert_eq!(
        store.task(&ada.id, &ada_tasks[2]).await.unwrap().state(),
        TaskState::Queued
    );
    // A task that waits for its owner holds no slot.
    let question = Attention {
        kind: AttentionKind::Question,
        message: "?".into(),
    };
    store
        .transition(
            Actor::Deft,
            &ada_tasks[0],
            Transition::NeedAttention(question),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        store.claim_next("w1", later(60_000), 2).await.unwrap(),
        Some(ada_tasks[2].clone())
    );
}

async fn concurrent_claims_take_each_task_once(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    for n in 0..20 {
        store
            .create_task(&ada.id, new_task(&format!("t{n}"), &repo))
            .await
            .unwrap();
    }
    let claimers: Vec<_> = (0..6)
        .map(|worker| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(id) = store
                    .claim_next(&format!("w{worker}"), later(60_000), 100)
                    .await
                    .unwrap()
                {
                    mine.push(id);
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        (count, all.len()),
        (20, 20),
        "every task claimed, and only once"
    );
}

async fn concurrent_claims_respect_the_per_user_limit(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    for n in 0..20 {
        store
            .create_task(&ada.id, new_task(&format!("t{n}"), &repo))
            .await
            .unwrap();
    }
    // Ten workers at once against a limit of three: the owner's row lock and the recount must
    // hold the line on PostgreSQL, where claims do not queue behind each other.
    let claimers: Vec<_> = (0..10)
        .map(|worker| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..5 {
                    if let Some(id) = store
                        .claim_next(&format!("w{worker}"), later(60_000), 3)
                        .await
                        .unwrap()
                    {
                        mine.push(id);
                    }
                }
                mine
            })
        })
        .collect();
    let mut claimed = 0;
    for claimer in claimers {
        claimed += claimer.await.unwrap().len();
    }
    assert_eq!(claimed, 3, "exactly the limit was claimed");
    let running = store
        .list_tasks(
            &ada.id,
            &TaskFilter {
                state: Some(TaskState::InProgress),
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(running.tasks.len(), 3);
}

async fn a_lease_that_runs_out_puts_the_task_back(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    let task = store
        .create_task(&ada.id, new_task("t", &repo))
        .await
        .unwrap()
        .id;
    let claimed = store.claim_next("w1", later(60_000), 10).await.unwrap();
    assert_eq!(claimed.as_ref(), Some(&task));
    let newer = store
        .create_task(&ada.id, new_task("newer", &repo))
        .await
        .unwrap()
        .id;
    assert!(
        !store.renew_lease(&task, "w2", later(60_000)).await.unwrap(),
        "another worker cannot renew it"
    );
    assert!(
        store
            .requeue_expired(deft_core::Timestamp::now())
            .await
            .unwrap()
            .is_empty(),
        "not yet expired"
    );
    // Two minutes on, the lease has run out: no need to wait for it.
    assert_eq!(
        store.requeue_expired(later(120_000)).await.unwrap(),
        vec![task.clone()]
    );
    assert_eq!(
        store.task(&ada.id, &task).await.unwrap().state(),
        TaskState::Queued
    );
    assert!(
        !store.renew_lease(&task, "w1", later(60_000)).await.unwrap(),
        "the lease is gone"
    );
    let events = store.events_after(&ada.id, &task, 0, 100).await.unwrap();
    assert!(
        events.iter().any(|e| e.data["step"] == "recovery"),
        "the requeue is in the log"
    );
    assert_eq!(
        store.task(&ada.id, &task).await.unwrap().queue_position,
        Some(1),
        "a task put back keeps its place ahead of newer ones"
    );
    assert_eq!(
        store.claim_next("w2", later(60_000), 10).await.unwrap(),
        Some(task.clone()),
        "and runs again before {newer}"
    );
    assert!(store.renew_lease(&task, "w2", later(60_000)).await.unwrap());
}

async fn a_stopping_worker_hands_its_task_back_at_once(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    let task = store
        .create_task(&ada.id, new_task("t", &repo))
        .await
        .unwrap()
        .id;
    assert_eq!(
        store.claim_next("w1", later(60_000), 10).await.unwrap(),
        Some(task.clone())
    );
    // An idle worker waiting for work wakes when the task is handed back, not at its poll.
    let mut changes = store.events().queue_changes();
    changes.mark_seen();
    let waiter = tokio::spawn(async move {
        let started = std::time::Instant::now();
        changes.wait(std::time::Duration::from_secs(30)).await;
        started.elapsed()
    });
    assert!(
        !store.release_lease(&task, "w2").await.unwrap(),
        "only the worker holding the lease hands the task back"
    );
    assert!(store.release_lease(&task, "w1").await.unwrap());
    assert!(
        waiter.await.unwrap() < std::time::Duration::from_secs(30),
        "the waiting worker was woken by the state change"
    );
    assert_eq!(
        store.task(&ada.id, &task).await.unwrap().state(),
        TaskState::Queued
    );
    assert!(
        !store.release_lease(&task, "w1").await.unwrap(),
        "a queued task has no lease to hand back"
    );
    let events = store.events_after(&ada.id, &task, 0, 100).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.data["step"] == "shutdown")
            .count(),
        1,
        "the hand-back is in the log once"
    );
    assert_eq!(
        store.claim_next("w2", later(60_000), 10).await.unwrap(),
        Some(task),
        "another worker continues it"
    );
}

async fn a_task_that_keeps_losing_its_worker_asks_for_attention(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    let task = store
        .create_task(&ada.id, new_task("t", &repo))
        .await
        .unwrap()
        .id;
    let lose_worker = || async {
        assert_eq!(
            store.claim_next("w", later(60_000), 10).await.unwrap(),
            Some(task.clone())
        );
        assert_eq!(
            store.requeue_expired(later(120_000)).await.unwrap(),
            vec![task.clone()]
        );
        store.task(&ada.id, &task).await.unwrap()
    };
    for lost in 1..=deft_store::LEASES_LOST_BEFORE_ATTENTION {
        assert_eq!(lose_worker().await.state(), TaskState::Queued);
        assert_eq!(store.leases_lost(&task).await.unwrap(), lost);
    }
    let stopped = lose_worker().await;
    assert_eq!(stopped.state(), TaskState::NeedsAttention);
    let attention = stopped.status.attention().unwrap();
    assert_eq!(attention.kind, AttentionKind::Error);
    assert!(
        attention.message.contains("stopped 4 times") && attention.message.contains("answer"),
        "{}",
        attention.message
    );
    // An answer gives it a fresh start.
    let note = Some((
        EventKind::UserMessage,
        serde_json::json!({"kind": "answer", "message": "try again with less memory"}),
    ));
    store
        .transition(Actor::Owner(&ada.id), &task, Transition::Answer, note)
        .await
        .unwrap();
    assert_eq!(store.leases_lost(&task).await.unwrap(), 0);
    assert_eq!(lose_worker().await.state(), TaskState::Queued);
    assert_eq!(store.leases_lost(&task).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_leases_are_counted_from_the_log_when_the_count_is_added_sqlite() {
    the_count_of_lost_leases_is_backfilled(TestDatabase::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_leases_are_counted_from_the_log_when_the_count_is_added_postgres() {
    the_count_of_lost_leases_is_backfilled(TestDatabase::postgres().await).await;
}

/// A database from before `leases_lost` (migration 11) gets the count its log shows: the
/// losses since the owner last wrote, and none for a task that is over.
async fn the_count_of_lost_leases_is_backfilled(db: TestDatabase) {
    let store = open(&db).await;
    let (ada, repo) = user_with_repo(&store, "ada").await;
    let mut tasks = Vec::new();
    for description in ["steered", "lost twice", "cancelled"] {
        let task = store.create_task(&ada.id, new_task(description, &repo));
        tasks.push(task.await.unwrap().id);
    }
    for _ in 0..2 {
        for _ in &tasks {
            assert!(
                store
                    .claim_next("w", later(60_000), 10)
                    .await
                    .unwrap()
                    .is_some()
            );
        }
        assert_eq!(
            store.requeue_expired(later(120_000)).await.unwrap().len(),
            3
        );
    }
    store
        .transition(
            Actor::Owner(&ada.id),
            &tasks[0],
            Transition::Steer,
            Some((
                EventKind::UserMessage,
                json!({"kind": "steering", "message": "m"}),
            )),
        )
        .await
        .unwrap();
    store
        .transition(Actor::Owner(&ada.id), &tasks[2], Transition::Cancel, None)
        .await
        .unwrap();
    for (task, count) in tasks.iter().zip([0, 2, 2]) {
        assert_eq!(store.leases_lost(task).await.unwrap(), count, "{task}");
    }
    store.close().await;
    // Back to the schema before migration 11, with the log as it stands.
    let raw = sqlx::AnyPool::connect(&db.url).await.unwrap();
    for sql in [
        "ALTER TABLE tasks DROP COLUMN leases_lost",
        "DELETE FROM _sqlx_migrations WHERE version = 11",
    ] {
        sqlx::query(sql).execute(&raw).await.unwrap();
    }
    raw.close().await;
    let store = open(&db).await;
    for (task, count) in tasks.iter().zip([0, 2, 0]) {
        assert_eq!(store.leases_lost(task).await.unwrap(), count, "{task}");
    }
}

async fn passwords_sessions_and_login_links_sign_in_once_and_expire(store: Store) {
    let ada = store.create_user("ada", false).await.unwrap();
    assert_eq!(
        store.check_password("ada", "").await.unwrap(),
        None,
        "no password set: no sign-in"
    );
    let error = store.set_password(&ada.id, "short").await.unwrap_err();
    assert!(
        matches!(error, StoreError::Invalid(ref e) if e.field == "password"),
        "{error}"
    );
    assert!(
        error.to_string().contains("at least 12 characters"),
        "{error}"
    );
    assert!(!store.has_password(&ada.id).await.unwrap());
    store
        .set_password(&ada.id, "correct horse battery")
        .await
        .unwrap();
    assert!(store.has_password(&ada.id).await.unwrap());
    assert_eq!(
        store
            .check_password("ada", "correct horse battery")
            .await
            .unwrap(),
        Some(ada.clone())
    );
    for (name, password) in [
        ("ada", "correct horse battery!"),
        ("bob", "correct horse battery"),
    ] {
        assert_eq!(
            store.check_password(name, password).await.unwrap(),
            None,
            "{name}/{password}"
        );
    }

    let session = store.start_session(&ada.id, 60_000).await.unwrap();
    assert!(!format!("{session:?}").contains(&session.token));
    let found = store.session(&session.token).await.unwrap().unwrap();
    assert_eq!((found.user, &found.csrf), (ada.clone(), &session.csrf));
    assert_eq!(
        store
            .session("deft_s_unknown")
            .await
            .unwrap()
            .map(|s| s.user),
        None
    );
    store.end_session(&session.token).await.unwrap();
    assert!(store.session(&session.token).await.unwrap().is_none());
    let expired = store.start_session(&ada.id, -1).await.unwrap();
    assert!(store.session(&expired.token).await.unwrap().is_none());

    let link = store.create_login_link(&ada.id, 60_000).await.unwrap();
    assert_eq!(
        store.redeem_login_link(&link).await.unwrap(),
        Some(ada.clone())
    );
    assert_eq!(
        store.redeem_login_link(&link).await.unwrap(),
        None,
        "a link signs in once"
    );
    let stale = store.create_login_link(&ada.id, -1).await.unwrap();
    assert_eq!(store.redeem_login_link(&stale).await.unwrap(), None);
}

async fn tokens_are_listed_without_values_and_revoked_by_their_owner_only(store: Store) {
    let ada = store.create_user("ada", false).await.unwrap();
    let bob = store.create_user("bob", false).await.unwrap();
    let laptop = store.create_token(&ada, "laptop").await.unwrap();
    let ci = store.create_token(&ada, "ci").await.unwrap();
    let listed = store.list_tokens(&ada.id).await.unwrap();
    let mut labels: Vec<&str> = listed.iter().map(|t| t.label.as_str()).collect();
    labels.sort_unstable();
    assert_eq!(labels, ["ci", "laptop"]);
    assert!(
        !format!("{listed:?}").contains(&laptop.token),
        "no value listed"
    );
    assert!(store.list_tokens(&bob.id).await.unwrap().is_empty());

    let error = store
        .revoke_token(&bob.id, laptop.id.as_str())
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error}");
    assert!(store.user_for_token(&laptop.token).await.unwrap().is_some());

    store
        .revoke_token(&ada.id, laptop.id.as_str())
        .await
        .unwrap();
    assert_eq!(store.user_for_token(&laptop.token).await.unwrap(), None);
    assert_eq!(
        store.user_for_token(&ci.token).await.unwrap(),
        Some(ada.clone())
    );
    assert_eq!(store.list_tokens(&ada.id).await.unwrap().len(), 1);
}

async fn github_logins_link_once_and_deliveries_count_once(store: Store) {
    let ada = store.create_user("ada", false).await.unwrap();
    let bob = store.create_user("bob", false).await.unwrap();
    store.link_github(&ada.id, "OctoCat").await.unwrap();
    assert_eq!(
        store.github_user("octocat").await.unwrap(),
        Some(ada.clone())
    );
    assert_eq!(
        store.github_login(&ada.id).await.unwrap().as_deref(),
        Some("octocat")
    );
    let taken = store.link_github(&bob.id, "octocat").await.unwrap_err();
    assert!(matches!(taken, StoreError::Conflict { .. }), "{taken}");
    let bad = store.link_github(&bob.id, "not a login").await.unwrap_err();
    assert!(
        matches!(bad, StoreError::Invalid(ref e) if e.field == "login"),
        "{bad}"
    );
    assert_eq!(
        store.unlink_github("OCTOCAT").await.unwrap(),
        Some(ada.id.clone())
    );
    assert_eq!(store.github_user("octocat").await.unwrap(), None);
    assert_eq!(store.unlink_github("octocat").await.unwrap(), None);

    assert!(
        store
            .record_delivery("d-1", "issues", b"{\"n\": 1}")
            .await
            .unwrap()
    );
    assert!(
        !store.record_delivery("d-1", "issues", b"{}").await.unwrap(),
        "a redelivery"
    );
    assert!(
        store
            .record_delivery("d-2", "ping", b"{\"n\": 2}")
            .await
            .unwrap()
    );
    assert_eq!(
        store.pending_deliveries().await.unwrap(),
        vec![
            (
                "d-1".to_owned(),
                "issues".to_owned(),
                "{\"n\": 1}".to_owned()
            ),
            ("d-2".to_owned(), "ping".to_owned(), "{\"n\": 2}".to_owned()),
        ]
    );
    store.delivery_done("d-1").await.unwrap();
    assert_eq!(store.pending_deliveries().await.unwrap().len(), 1);
    let future = deft_core::Timestamp::now().plus_millis(60_000);
    assert_eq!(
        store.prune_deliveries(future).await.unwrap(),
        1,
        "only what was acted on"
    );
    assert!(!store.record_delivery("d-2", "ping", b"{}").await.unwrap());

    // From a pull request on GitHub back to its task, by page or by branch.
    let repo = store
        .add_repository(
            &ada.id,
            NewRepository {
                name: "widgets".into(),
                forge: ForgeKind::Github,
                location: "octo-org/widgets".into(),
                default_branch: "main".into(),
            },
        )
        .await
        .unwrap();
    let task = store
        .create_task(
            &ada.id,
            NewTask {
                description: "Add a greeting".into(),
                repos: vec![repo.id.clone()],
                chat_id: None,
                approve_plan: false,
            },
        )
        .await
        .unwrap();
    let pull_request = deft_core::PullRequest {
        repo: repo.id.clone(),
        base: "main".into(),
        head: "deft/abc-add-a-greeting".into(),
        title: "Add a greeting".into(),
        body: String::new(),
        status: deft_core::PullRequestStatus::Open,
        url: Some("https://github.example/octo-org/widgets/pull/101".into()),
    };
    store
        .upsert_pull_request(&task.id, &pull_request)
        .await
        .unwrap();
    assert_eq!(
        store
            .task_by_pull_request_url("https://github.example/octo-org/widgets/pull/101")
            .await
            .unwrap(),
        Some(task.id.clone())
    );
    assert_eq!(
        store
            .task_by_branch("octo-org/widgets", "deft/abc-add-a-greeting")
            .await
            .unwrap(),
        Some(task.id.clone())
    );
    assert_eq!(
        store
            .task_by_branch("octo-org/other", "deft/abc-add-a-greeting")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .open_github_tasks(deft_store::GithubScope::Repos(&["octo-org/widgets".into()]))
            .await
            .unwrap(),
        vec![task.id.clone()]
    );
    assert_eq!(
        store
            .open_github_tasks(deft_store::GithubScope::User(&ada.id))
            .await
            .unwrap(),
        vec![task.id.clone()]
    );
    assert!(
        store
            .open_github_tasks(deft_store::GithubScope::User(&bob.id))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .open_github_tasks(deft_store::GithubScope::All)
            .await
            .unwrap(),
        vec![task.id.clone()]
    );
    assert_eq!(store.issue_of(&task.id).await.unwrap(), None);
    store
        .link_issue(&task.id, "octo-org/widgets", 7)
        .await
        .unwrap();
    assert_eq!(
        store.issue_of(&task.id).await.unwrap(),
        Some(("octo-org/widgets".to_owned(), 7))
    );
}

async fn usage_outside_tasks_counts_towards_the_week(store: Store) {
    let ada = store.create_user("ada", false).await.unwrap();
    let bob = store.create_user("bob", false).await.unwrap();
    let week = deft_core::Timestamp::now().week_start();
    let chat = Usage {
        input_tokens: 120,
        output_tokens: 30,
        cached_tokens: 0,
    };
    store
        .record_user_usage(&ada.id, "anthropic/claude", chat)
        .await
        .unwrap();
    let spent = store.usage_since(&ada.id, week).await.unwrap();
    assert_eq!((spent.input_tokens, spent.output_tokens), (120, 30));
    assert_eq!(
        store.usage_since(&bob.id, week).await.unwrap().input_tokens,
        0
    );
}

async fn github_issues_check_rounds_authorizations_and_merged_tasks(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    let task = store
        .create_task(&ada.id, new_task("Fix #7", &repo))
        .await
        .unwrap();
    store
        .link_issue(&task.id, "octo-org/widgets", 7)
        .await
        .unwrap();
    let found = store.issue_tasks("octo-org/widgets", 7).await.unwrap();
    assert_eq!(
        found,
        [deft_store::IssueTask {
            task: task.id.clone(),
            owner: ada.id.clone(),
            state: TaskState::Queued
        }]
    );
    assert!(
        store
            .issue_tasks("octo-org/widgets", 8)
            .await
            .unwrap()
            .is_empty()
    );

    // Failing checks start one round per head commit, and at most `cap` in all.
    let url = "https://github.example/octo-org/widgets/pull/101";
    let mut pull_request = PullRequest {
        repo: repo.clone(),
        base: "main".into(),
        head: "deft/fix-7".into(),
        title: "Fix #7".into(),
        body: String::new(),
        status: PullRequestStatus::Open,
        url: Some(url.into()),
    };
    store
        .upsert_pull_request(&task.id, &pull_request)
        .await
        .unwrap();
    let round = |sha: &'static str| store.take_check_fix_round(url, sha, 2);
    assert!(round("aaa").await.unwrap());
    assert!(!round("aaa").await.unwrap(), "once per commit");
    assert!(round("bbb").await.unwrap());
    assert!(!round("ccc").await.unwrap(), "the cap is reached");

    // A completed task whose pull request merged is final; a closed one takes feedback.
    for transition in [Transition::Start, Transition::Complete] {
        store
            .transition(Actor::Deft, &task.id, transition, None)
            .await
            .unwrap();
    }
    pull_request.status = PullRequestStatus::Merged;
    store
        .upsert_pull_request(&task.id, &pull_request)
        .await
        .unwrap();
    let refused = store
        .transition(Actor::Owner(&ada.id), &task.id, Transition::Feedback, None)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("merged, so the task is final"),
        "{refused}"
    );
    pull_request.status = PullRequestStatus::Closed;
    store
        .upsert_pull_request(&task.id, &pull_request)
        .await
        .unwrap();
    let reopened = store
        .transition(Actor::Owner(&ada.id), &task.id, Transition::Feedback, None)
        .await
        .unwrap();
    assert_eq!(reopened.state(), TaskState::Queued);

    // An authorization is taken once, by the session that started it, before it expires.
    let take = |state: &'static str, session: &'static str| {
        store.take_github_authorization(state, session)
    };
    store
        .begin_github_authorization(
            &ada.id,
            "session-1",
            "state-1",
            "verifier-1",
            "http://x/cb",
            60_000,
        )
        .await
        .unwrap();
    assert!(
        take("state-1", "session-2").await.unwrap().is_none(),
        "another session"
    );
    assert!(
        take("state-1", "session-1").await.unwrap().is_none(),
        "used up by the attempt"
    );
    store
        .begin_github_authorization(
            &ada.id,
            "session-1",
            "state-2",
            "verifier-2",
            "http://x/cb",
            60_000,
        )
        .await
        .unwrap();
    let pending = take("state-2", "session-1").await.unwrap().unwrap();
    assert_eq!(
        (
            pending.user,
            pending.verifier.as_str(),
            pending.redirect_uri.as_str()
        ),
        (ada.id.clone(), "verifier-2", "http://x/cb")
    );
    assert!(!format!("{:?}", take("state-2", "session-1").await.unwrap()).contains("verifier"));
    store
        .begin_github_authorization(&ada.id, "session-1", "state-3", "v", "http://x/cb", -1)
        .await
        .unwrap();
    assert!(
        take("state-3", "session-1").await.unwrap().is_none(),
        "expired"
    );
}

async fn listing_searches_text_filters_by_repository_and_sets_a_state_apart(store: Store) {
    let (ada, widgets) = user_with_repo(&store, "ada").await;
    let gadgets = store
        .add_repository(
            &ada.id,
            NewRepository {
                name: "gadgets".into(),
                forge: ForgeKind::Local,
                location: "/srv/git/ada/gadgets".into(),
                default_branch: "main".into(),
            },
        )
        .await
        .unwrap()
        .id;
    let fix = store
        .create_task(&ada.id, new_task("Fix the LOGIN page", &widgets))
        .await
        .unwrap();
    let percent = store
        .create_task(&ada.id, new_task("Show 100% of the login", &gadgets))
        .await
        .unwrap();
    let other = store
        .create_task(&ada.id, new_task("Add a footer", &gadgets))
        .await
        .unwrap();
    store
        .transition(
            Actor::Deft,
            &percent.id,
            Transition::NeedAttention(question()),
            None,
        )
        .await
        .unwrap();
    // Another user's task with the same words is never listed.
    let (bob, bobs) = user_with_repo(&store, "bob").await;
    store
        .create_task(&bob.id, new_task("Fix the login page", &bobs))
        .await
        .unwrap();
    let ids = |filter: TaskFilter| {
        let store = store.clone();
        let ada = ada.id.clone();
        async move {
            let page = store
                .list_tasks(
                    &ada,
                    &TaskFilter {
                        limit: 50,
                        ..filter
                    },
                )
                .await
                .unwrap();
            page.tasks.into_iter().map(|t| t.id).collect::<Vec<_>>()
        }
    };
    let text = |text: &str| TaskFilter {
        text: Some(text.into()),
        ..Default::default()
    };
    // Case aside, anywhere in the description; `%` and `_` are themselves, not wildcards.
    assert_eq!(
        ids(text("login")).await,
        [percent.id.clone(), fix.id.clone()]
    );
    assert_eq!(ids(text("100%")).await, vec![percent.id.clone()]);
    assert_eq!(ids(text("1_0")).await, Vec::<TaskId>::new());
    assert_eq!(ids(text("  ")).await.len(), 3, "blank text is no filter");
    let repo = |repo: &RepoId| TaskFilter {
        repo: Some(repo.clone()),
        ..Default::default()
    };
    assert_eq!(ids(repo(&widgets)).await, vec![fix.id.clone()]);
    assert_eq!(
        ids(repo(&gadgets)).await,
        [other.id.clone(), percent.id.clone()]
    );
    assert_eq!(
        ids(TaskFilter {
            text: Some("LOGIN".into()),
            repo: Some(gadgets.clone()),
            ..Default::default()
        })
        .await,
        vec![percent.id.clone()]
    );
    assert_eq!(
        ids(TaskFilter {
            except: Some(TaskState::NeedsAttention),
            ..Default::default()
        })
        .await,
        [other.id.clone(), fix.id.clone()]
    );
    assert_eq!(store.count_needing_attention(&ada.id).await.unwrap(), 1);
    assert_eq!(store.count_needing_attention(&bob.id).await.unwrap(), 0);
    // Each listed task says when its current round began: when it was last queued.
    let page = store
        .list_tasks(
            &ada.id,
            &TaskFilter {
                limit: 50,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let started = page.listings[&fix.id].round_started.unwrap();
    assert!(started >= fix.created_at && started <= deft_core::Timestamp::now());
}

async fn a_pull_requests_line_counts_are_kept_until_its_next_push(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    let task = store
        .create_task(&ada.id, new_task("x", &repo))
        .await
        .unwrap();
    let pr = PullRequest {
        repo: repo.clone(),
        base: "main".into(),
        head: "deft/0190-x".into(),
        title: "Add x".into(),
        body: "body".into(),
        status: PullRequestStatus::Open,
        url: None,
    };
    store.upsert_pull_request(&task.id, &pr).await.unwrap();
    let stats = || {
        let store = store.clone();
        let ada = ada.id.clone();
        let task = task.id.clone();
        async move {
            let page = store
                .list_tasks(
                    &ada,
                    &TaskFilter {
                        limit: 10,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            page.listings[&task].diff_stats.clone()
        }
    };
    assert!(stats().await.is_empty(), "unknown until a diff is read");
    let stat = DiffStat {
        additions: 12,
        deletions: 3,
    };
    // Another user cannot set them, nor counts read for another head.
    let (bob, _) = user_with_repo(&store, "bob").await;
    store
        .set_diff_stat(&bob.id, &task.id, &repo, &pr.head, stat)
        .await
        .unwrap();
    store
        .set_diff_stat(&ada.id, &task.id, &repo, "deft/other", stat)
        .await
        .unwrap();
    assert!(stats().await.is_empty());
    store
        .set_diff_stat(&ada.id, &task.id, &repo, &pr.head, stat)
        .await
        .unwrap();
    assert_eq!(stats().await.get(&repo), Some(&stat));
    // A push (the pull request updated) may change the diff: the counts are read again.
    store.upsert_pull_request(&task.id, &pr).await.unwrap();
    assert!(stats().await.is_empty());
}

async fn chats_are_listed_most_recent_first_with_their_first_message(store: Store) {
    let (ada, repo) = user_with_repo(&store, "ada").await;
    let (bob, bobs) = user_with_repo(&store, "bob").await;
    // The busy chat is the older one: it comes first by its last message alone.
    let busy = store
        .create_chat(&ada.id, vec![repo.clone()])
        .await
        .unwrap();
    let quiet = store
        .create_chat(&ada.id, vec![repo.clone()])
        .await
        .unwrap();
    store.create_chat(&bob.id, vec![bobs]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    for message in ["Why is the build slow?", "And the tests?"] {
        store
            .post_chat_message(&ada.id, &busy.id, "ada", message)
            .await
            .unwrap();
    }
    let listed = store.list_chats(&ada.id, 10).await.unwrap();
    let ids: Vec<_> = listed.iter().map(|c| c.chat.id.clone()).collect();
    assert_eq!(
        ids,
        [busy.id.clone(), quiet.id.clone()],
        "bob's chat is not ada's"
    );
    assert_eq!(
        listed[0].first_message.as_deref(),
        Some("Why is the build slow?")
    );
    assert_eq!(listed[0].messages, 2);
    assert_eq!(listed[1].first_message, None);
    assert_eq!(listed[1].chat.repos, [repo]);
    assert_eq!(store.list_chats(&ada.id, 1).await.unwrap().len(), 1);
}
