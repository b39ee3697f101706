//! The HTTP API against a real server on a loopback port, with a real SQLite store in a temp dir.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use deft_core::{EventKind, TaskId, Transition};
use deft_server::{AppState, ModelReadiness};
use deft_store::{Actor, MasterKey, Store};
use eventsource_stream::Eventsource as _;
use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct TestApp {
    base: String,
    store: Store,
    http: reqwest::Client,
    admin: String,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

/// How a test server is set up.
struct Setup {
    model: ModelReadiness,
    local_roots: deft_forge::LocalRoots,
    /// A database other than a fresh SQLite file (a PostgreSQL schema).
    database_url: Option<String>,
    /// `[server] trusted_proxies`.
    trusted_proxies: deft_server::TrustedProxies,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            model: ModelReadiness::Ready {
                label: "anthropic/scripted".into(),
            },
            local_roots: deft_forge::LocalRoots::unrestricted(),
            database_url: None,
            trusted_proxies: deft_server::TrustedProxies::default(),
        }
    }
}

/// One key for every store of a test, so that two stores can share a database.
fn test_key() -> MasterKey {
    MasterKey::from_hex(&"22".repeat(32)).unwrap()
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    async fn start() -> TestApp {
        TestApp::start_with(ModelReadiness::Ready {
            label: "anthropic/scripted".into(),
        })
        .await
    }

    async fn start_with(model: ModelReadiness) -> TestApp {
        TestApp::start_on(Setup {
            model,
            ..Setup::default()
        })
        .await
    }

    async fn start_on(setup: Setup) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let url = setup.database_url.clone().unwrap_or_else(|| {
            format!("sqlite://{}?mode=rwc", dir.path().join("deft.db").display())
        });
        let store = Store::open(&url, test_key()).await.unwrap();
        let admin = store.bootstrap_admin().await.unwrap().unwrap().token;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let mut state = AppState::new(store.clone(), setup.model, shutdown.clone());
        state.stream_poll = Duration::from_millis(200);
        state.local_roots = setup.local_roots;
        state.trusted_proxies = setup.trusted_proxies;
        tokio::spawn(deft_server::serve(listener, state));
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        TestApp {
            base,
            store,
            http,
            admin,
            dir,
            shutdown,
        }
    }

    /// A second, ordinary user and their token.
    async fn user(&self, name: &str) -> String {
        let user = self.store.create_user(name, false).await.unwrap();
        self.store.create_token(&user, "test").await.unwrap().token
    }

    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            },
        )
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(token, Method::POST, &format!("/api/v1{path}"), Some(body))
            .await
    }

    async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        self.call(token, Method::GET, &format!("/api/v1{path}"), None)
            .await
    }

    /// A git repository in the temp dir, with one commit on `main`.
    fn git_repo(&self, name: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg("git init -q -b main && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m init")
            .current_dir(&path)
            .status()
            .unwrap();
        assert!(status.success());
        path.display().to_string()
    }

    async fn task(&self, token: &str, repo: &str) -> String {
        let (status, task) = self
            .post(
                token,
                "/tasks",
                json!({"description": "Add a health check", "repos": [repo]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        task["id"].as_str().unwrap().to_owned()
    }
}

fn check_error(got: (StatusCode, Value), status: StatusCode, code: &str, message_part: &str) {
    let (got_status, body) = got;
    assert_eq!(got_status, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(message_part),
        "{message:?} should contain {message_part:?}"
    );
}

#[tokio::test]
async fn create_list_show_and_filter_tasks() {
    let app = TestApp::start().await;
    let repo = app.git_repo("widgets");
    let (status, task) = app
        .post(
            &app.admin,
            "/tasks",
            json!({"description": "Add a health check", "repos": [repo]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(task["state"], "queued");
    assert_eq!(task["repos"][0]["name"], "widgets");
    assert_eq!(task["queue_position"], 1);
    assert_eq!(
        task["usage"],
        json!({"input_tokens": 0, "output_tokens": 0, "cached_tokens": 0})
    );
    assert_eq!(task["pull_requests"], json!([]));
    let id = task["id"].as_str().unwrap();

    let (status, shown) = app.get(&app.admin, &format!("/tasks/{id}")).await;
    assert_eq!(
        (status, &shown["description"]),
        (StatusCode::OK, &json!("Add a health check"))
    );
    let (_, list) = app.get(&app.admin, "/tasks").await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1);
    let (_, queued) = app.get(&app.admin, "/tasks?state=queued").await;
    assert_eq!(queued["tasks"][0]["id"], *id);
    let (_, done) = app.get(&app.admin, "/tasks?state=completed").await;
    assert_eq!(done["tasks"], json!([]));
    check_error(
        app.get(&app.admin, "/tasks?state=done").await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "unknown state `done`",
    );
    check_error(
        app.get(&app.admin, "/tasks?limit=0").await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "between 1 and 500",
    );

    // The repository given by path was registered once and is now usable by name and id.
    let (_, repos) = app.get(&app.admin, "/repos").await;
    let repo_id = repos["repos"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(repos["repos"].as_array().unwrap().len(), 1);
    let (status, _) = app
        .post(
            &app.admin,
            "/tasks",
            json!({"description": "x", "repos": ["widgets", repo_id]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // Searched by text (case aside) and filtered by repository, by name or id, as the list
    // page does.
    let other = app.git_repo("gadgets");
    app.post(
        &app.admin,
        "/tasks",
        json!({"description": "Add a HEALTH page to gadgets", "repos": [other]}),
    )
    .await;
    let (_, found) = app.get(&app.admin, "/tasks?q=health").await;
    assert_eq!(found["tasks"].as_array().unwrap().len(), 2, "{found}");
    let (_, found) = app.get(&app.admin, "/tasks?q=health&repo=gadgets").await;
    assert_eq!(
        found["tasks"][0]["description"], "Add a HEALTH page to gadgets",
        "{found}"
    );
    assert_eq!(found["tasks"].as_array().unwrap().len(), 1);
    let (_, found) = app
        .get(&app.admin, &format!("/tasks?repo={repo_id}&q=%20x%20"))
        .await;
    assert_eq!(found["tasks"][0]["description"], "x", "{found}");
    check_error(
        app.get(&app.admin, "/tasks?repo=nowhere").await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "you have no repository `nowhere`",
    );
    check_error(
        app.get(&app.admin, &format!("/tasks?q={}", "a".repeat(201)))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "at most 200 characters",
    );
}

#[tokio::test]
async fn bad_input_gets_the_error_shape_and_stores_nothing() {
    let app = TestApp::start().await;
    let repo = app.git_repo("widgets");
    let url = format!("{}/api/v1/tasks", app.base);
    let send = |body: &'static str, content_type: &'static str| {
        app.http
            .post(&url)
            .bearer_auth(&app.admin)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let response = send("{\"description\": ", "application/json")
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "malformed_json");
    let response = send("{\"repos\": []}", "application/json").await.unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_input");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("description"),
        "{body}"
    );
    let response = send("{}", "text/plain").await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    check_error(
        app.post(
            &app.admin,
            "/tasks",
            json!({"description": "x", "repos": [repo], "colour": "red"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "unknown field `colour`",
    );
    check_error(
        app.post(
            &app.admin,
            "/tasks",
            json!({"description": "x", "repos": []}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "repos: is empty",
    );
    let (status, body) = app
        .post(
            &app.admin,
            "/tasks",
            json!({"description": "x", "repos": ["/nope/missing"]}),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("repos[0]"))
    );
    check_error(
        app.post(
            &app.admin,
            "/tasks",
            json!({"description": "x", "repos": ["acme/widgets"]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "GitHub is not configured on this deft",
    );
    let (_, list) = app.get(&app.admin, "/tasks").await;
    assert_eq!(list["tasks"], json!([]), "no bad request stored a task");

    check_error(
        app.get(&app.admin, "/nowhere").await,
        StatusCode::NOT_FOUND,
        "not_found",
        "route not found",
    );
    check_error(
        app.call(&app.admin, Method::DELETE, "/api/v1/tasks", None)
            .await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "does not take that method",
    );
}

#[tokio::test]
async fn credentials_are_required_and_checked() {
    let app = TestApp::start().await;
    let response = app
        .http
        .get(format!("{}/api/v1/tasks", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deft token create")
    );
    check_error(
        app.get("deft_forged", "/tasks").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "not valid",
    );
    let (status, me) = app.get(&app.admin, "/me").await;
    assert_eq!(
        (status, &me["name"], &me["is_admin"]),
        (StatusCode::OK, &json!("admin"), &json!(true))
    );
    let response = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "health needs no token");
}

#[tokio::test]
async fn another_users_objects_are_404() {
    let app = TestApp::start().await;
    let repo = app.git_repo("widgets");
    let id = app.task(&app.admin, &repo).await;
    let bob = app.user("bob").await;
    for path in [
        format!("/tasks/{id}"),
        format!("/tasks/{id}/events"),
        format!("/tasks/{id}/events/stream"),
    ] {
        check_error(
            app.get(&bob, &path).await,
            StatusCode::NOT_FOUND,
            "not_found",
            "task not found",
        );
    }
    check_error(
        app.post(&bob, &format!("/tasks/{id}/cancel"), json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
        "task not found",
    );
    let (_, list) = app.get(&bob, "/tasks").await;
    assert_eq!(list["tasks"], json!([]));
    let (_, repos) = app.get(&app.admin, "/repos").await;
    let repo_id = repos["repos"][0]["id"].as_str().unwrap();
    let (status, body) = app
        .post(
            &bob,
            "/tasks",
            json!({"description": "x", "repos": [repo_id]}),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("repos[0]"))
    );
    let learning = app
        .store
        .add_learning(
            &app.store.user_by_name("admin").await.unwrap().id,
            "Use our error helper",
            "PR 1",
        )
        .await
        .unwrap();
    check_error(
        app.call(
            &bob,
            Method::DELETE,
            &format!("/api/v1/learnings/{}", learning.id),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
        "learning not found",
    );
    let (_, learnings) = app.get(&app.admin, "/learnings").await;
    assert_eq!(learnings["learnings"][0]["text"], "Use our error helper");
    let (status, _) = app
        .call(
            &app.admin,
            Method::DELETE,
            &format!("/api/v1/learnings/{}", learning.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, learnings) = app.get(&app.admin, "/learnings").await;
    assert_eq!(learnings["learnings"], json!([]));
    let (_, task) = app.get(&app.admin, &format!("/tasks/{id}")).await;
    assert_eq!(task["state"], "queued");
}

#[tokio::test]
async fn lifecycle_actions_follow_the_state_machine() {
    let app = TestApp::start().await;
    let repo = app.git_repo("widgets");
    let id = app.task(&app.admin, &repo).await;
    check_error(
        app.post(
            &app.admin,
            &format!("/tasks/{id}/answer"),
            json!({"message": "yes"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_transition",
        "cannot answer a task that is queued",
    );
    check_error(
        app.post(
            &app.admin,
            &format!("/tasks/{id}/feedback"),
            json!({"message": "more"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_transition",
        "feedback is for completed tasks",
    );
    check_error(
        app.post(
            &app.admin,
            &format!("/tasks/{id}/answer"),
            json!({"message": "  "}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "message: is empty",
    );

    // The worker side is not built yet: drive it through the store, as the scheduler will.
    let task = TaskId::from_stored(id.clone());
    app.store
        .transition(Actor::Deft, &task, Transition::Start, None)
        .await
        .unwrap();
    let question = deft_core::Attention {
        kind: deft_core::AttentionKind::Question,
        message: "Which port?".into(),
    };
    app.store
        .transition(
            Actor::Deft,
            &task,
            Transition::NeedAttention(question),
            None,
        )
        .await
        .unwrap();
    let (_, waiting) = app.get(&app.admin, &format!("/tasks/{id}")).await;
    assert_eq!(
        waiting["attention"],
        json!({"kind": "question", "message": "Which port?"})
    );
    let (status, answered) = app
        .post(
            &app.admin,
            &format!("/tasks/{id}/answer"),
            json!({"message": "8080"}),
        )
        .await;
    assert_eq!(
        (status, &answered["state"]),
        (StatusCode::OK, &json!("queued"))
    );
    assert!(answered.get("attention").is_none());
    app.store
        .transition(Actor::Deft, &task, Transition::Start, None)
        .await
        .unwrap();
    app.store
        .transition(Actor::Deft, &task, Transition::Complete, None)
        .await
        .unwrap();
    let (_, fed) = app
        .post(
            &app.admin,
            &format!("/tasks/{id}/feedback"),
            json!({"message": "rename it"}),
        )
        .await;
    assert_eq!(fed["state"], "queued");

    let (status, cancelled) = app
        .post(&app.admin, &format!("/tasks/{id}/cancel"), json!({}))
        .await;
    assert_eq!(
        (status, &cancelled["state"]),
        (StatusCode::OK, &json!("cancelled"))
    );
    check_error(
        app.post(&app.admin, &format!("/tasks/{id}/cancel"), json!({}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_transition",
        "cannot cancel a task that is cancelled",
    );
    let (_, events) = app.get(&app.admin, &format!("/tasks/{id}/events")).await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"task_created"));
    assert_eq!(kinds.iter().filter(|k| **k == "user_message").count(), 2);
    let (_, after) = app
        .get(&app.admin, &format!("/tasks/{id}/events?after=3"))
        .await;
    assert_eq!(after["events"][0]["seq"], 4);
}

#[tokio::test]
async fn plan_approval_with_an_edited_plan() {
    let app = TestApp::start().await;
    let repo = app.git_repo("widgets");
    let id = app.task(&app.admin, &repo).await;
    let task = TaskId::from_stored(id.clone());
    app.store
        .transition(Actor::Deft, &task, Transition::Start, None)
        .await
        .unwrap();
    let approval = deft_core::Attention {
        kind: deft_core::AttentionKind::PlanApproval,
        message: "Approve the plan".into(),
    };
    app.store
        .transition(
            Actor::Deft,
            &task,
            Transition::NeedAttention(approval),
            None,
        )
        .await
        .unwrap();
    let edited =
        json!({"requirements": ["r"], "acceptance_criteria": ["a"], "steps": ["one", "two"]});
    check_error(
        app.post(
            &app.admin,
            &format!("/tasks/{id}/approve"),
            json!({"plan": {"steps": []}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "missing field",
    );
    let (status, approved) = app
        .post(
            &app.admin,
            &format!("/tasks/{id}/approve"),
            json!({"plan": edited}),
        )
        .await;
    assert_eq!(
        (status, &approved["state"], &approved["plan"]),
        (StatusCode::OK, &json!("queued"), &edited)
    );
}

#[tokio::test]
async fn a_chat_creates_one_task() {
    let app = TestApp::start().await;
    let repo = app.git_repo("widgets");
    let (status, chat) = app
        .post(&app.admin, "/chats", json!({"repos": [repo]}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let chat_id = chat["id"].as_str().unwrap();
    check_error(
        app.post(&app.admin, &format!("/chats/{chat_id}/task"), json!({}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "the chat has no messages yet",
    );
    let (status, posted) = app
        .post(
            &app.admin,
            &format!("/chats/{chat_id}/messages"),
            json!({"message": "Add a /version route"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // With no model for chats, the answer says so, as the chat's page does.
    assert!(
        posted["reply"].is_null()
            && posted["no_reply"]
                .as_str()
                .is_some_and(|why| why.contains("reply")),
        "{posted}"
    );
    let (status, task) = app
        .post(&app.admin, &format!("/chats/{chat_id}/task"), json!({}))
        .await;
    assert_eq!(
        (status, &task["description"]),
        (StatusCode::CREATED, &json!("Add a /version route"))
    );
    check_error(
        app.post(&app.admin, &format!("/chats/{chat_id}/task"), json!({}))
            .await,
        StatusCode::CONFLICT,
        "conflict",
        "start a new chat",
    );
    check_error(
        app.post(
            &app.admin,
            "/tasks",
            json!({"description": "again", "repos": [repo], "chat_id": chat_id}),
        )
        .await,
        StatusCode::CONFLICT,
        "conflict",
        "already created task",
    );
    let (_, shown) = app.get(&app.admin, &format!("/chats/{chat_id}")).await;
    assert_eq!(shown["task_id"], task["id"]);
    let (_, list) = app.get(&app.admin, "/tasks").await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1);
    let bob = app.user("bob").await;
    check_error(
        app.get(&bob, &format!("/chats/{chat_id}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "chat not found",
    );
}

#[tokio::test]
async fn secrets_are_write_only_and_sealed_in_the_database_file() {
    let app = TestApp::start().await;
    let value = "s3cr3t-4f8a9c1e-value";
    let (status, info) = app
        .call(
            &app.admin,
            Method::PUT,
            "/api/v1/secrets/NPM_TOKEN",
            Some(json!({"value": value})),
        )
        .await;
    assert_eq!(
        (status, &info["name"]),
        (StatusCode::OK, &json!("NPM_TOKEN"))
    );
    let (_, list) = app.get(&app.admin, "/secrets").await;
    assert_eq!(list["secrets"][0]["name"], "NPM_TOKEN");
    assert!(!list.to_string().contains(value));
    check_error(
        app.call(
            &app.admin,
            Method::PUT,
            "/api/v1/secrets/BAD-NAME",
            Some(json!({"value": "x"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "not a valid variable name",
    );
    // Every file of the database, the write-ahead log included, holds only the sealed value.
    let mut found = Vec::new();
    for entry in std::fs::read_dir(app.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if bytes.windows(value.len()).any(|w| w == value.as_bytes()) {
            found.push(path);
        }
    }
    assert!(
        found.is_empty(),
        "the secret's value is in plain text in {found:?}"
    );
    let admin = app.store.user_by_name("admin").await.unwrap();
    assert_eq!(
        app.store.secret_values(&admin.id).await.unwrap()["NPM_TOKEN"],
        value
    );
    let (status, _) = app
        .call(
            &app.admin,
            Method::DELETE,
            "/api/v1/secrets/NPM_TOKEN",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    check_error(
        app.call(
            &app.admin,
            Method::DELETE,
            "/api/v1/secrets/NPM_TOKEN",
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
        "secret",
    );
}

#[tokio::test]
async fn environment_settings_are_validated_and_partial() {
    let app = TestApp::start().await;
    let (_, initial) = app.get(&app.admin, "/settings/environment").await;
    assert_eq!(
        initial,
        json!({"network": {"level": "connections", "allow": []}, "env": {}, "mcp": {"mcpServers": {}}, "approve_plan": false, "fix_failing_checks": false, "check_fix_rounds": 3})
    );
    let put = |body: Value| {
        app.call(
            &app.admin,
            Method::PUT,
            "/api/v1/settings/environment",
            Some(body),
        )
    };
    let (status, saved) = put(json!({
        "network": {"level": "custom", "allow": ["api.example.com", ".example.org"]},
        "env": {"RUST_LOG": "debug"},
        "mcp": {"mcpServers": {"everything": {"command": "mcp-server-everything", "args": [], "env": {"KEY": "${API_KEY}"}}}}
    }))
    .await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    let (status, body) = put(json!({"network": {"level": "custom", "allow": ["ok.example.com", "https://bad.example.com"]}, "env": {"A": "b"}})).await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("network.allow[1]"))
    );
    let (status, body) = put(json!({"mcp": {"mcpServers": {"github": {"args": ["x"]}}}})).await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (
            StatusCode::BAD_REQUEST,
            &json!("mcp.mcpServers.github.command")
        )
    );
    let (status, body) = put(json!({"fix_failing_checks": true, "check_fix_rounds": 11})).await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("check_fix_rounds"))
    );
    let (status, body) = put(json!({"network": {"level": "internet"}})).await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("network.level"))
    );
    let (status, body) = put(json!({"env": {"1BAD": "x"}})).await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("env.1BAD"))
    );
    // Variables too large for a task's sandbox are refused through the API too.
    let (status, body) = put(json!({"env": {"HUGE": "y".repeat(200 * 1024), "A": "b"}})).await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("env.HUGE")),
        "{body}"
    );
    let (_, now) = app.get(&app.admin, "/settings/environment").await;
    assert_eq!(now, saved, "refused updates changed nothing");
    let (_, changed) = put(json!({"env": {}})).await;
    assert_eq!(
        (&changed["env"], &changed["network"]),
        (&json!({}), &saved["network"])
    );
    let (status, body) = put(json!({"fix_failing_checks": true, "check_fix_rounds": 2})).await;
    assert_eq!(
        (
            status,
            &body["fix_failing_checks"],
            &body["check_fix_rounds"]
        ),
        (StatusCode::OK, &json!(true), &json!(2))
    );
}

#[tokio::test]
async fn repositories_are_registered_by_path() {
    let app = TestApp::start().await;
    let repo = app.git_repo("widgets");
    let (status, added) = app.post(&app.admin, "/repos", json!({"path": repo})).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(
        (&added["name"], &added["forge"], &added["default_branch"]),
        (&json!("widgets"), &json!("local"), &json!("main"))
    );
    let (_, again) = app.post(&app.admin, "/repos", json!({"path": repo})).await;
    assert_eq!(
        again["id"], added["id"],
        "registering twice gives the same repository"
    );
    let (status, body) = app
        .post(&app.admin, "/repos", json!({"path": "relative/dir"}))
        .await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("path"))
    );
    check_error(
        app.post(&app.admin, "/repos", json!({"github": "acme/widgets"}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "register a local repository with `path`",
    );
    check_error(
        app.post(&app.admin, "/repos", json!({})).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "exactly one of",
    );
}

/// How a stream reader behaves.
#[derive(Clone, Copy)]
enum Reconnect {
    Never,
    /// Drop the connection once caught up with the writer (at the live edge, while it is
    /// still writing), then reconnect with `Last-Event-ID`.
    AtTheLiveEdge,
}

/// Reads a task's stream until it has `until` events; returns the sequence numbers received.
async fn read_stream(
    app: &TestApp,
    id: &str,
    until: i64,
    reconnect: Reconnect,
    written: &AtomicI64,
    writer_done: &std::sync::atomic::AtomicBool,
) -> Vec<i64> {
    let mut seqs: Vec<i64> = Vec::new();
    let mut reconnected = false;
    loop {
        let mut request = app
            .http
            .get(format!("{}/api/v1/tasks/{id}/events/stream", app.base))
            .bearer_auth(&app.admin);
        if let Some(last) = seqs.last() {
            request = request.header("Last-Event-ID", last.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut events = response.bytes_stream().eventsource();
        while let Some(message) = events.next().await {
            let message = message.unwrap();
            let event: Value = serde_json::from_str(&message.data).unwrap();
            assert_eq!(message.id, event["seq"].to_string());
            let seq = event["seq"].as_i64().unwrap();
            seqs.push(seq);
            if seq == until {
                return seqs;
            }
            let caught_up = seq + 1 >= written.load(Ordering::SeqCst);
            if matches!(reconnect, Reconnect::AtTheLiveEdge)
                && !reconnected
                && caught_up
                && seq > 100
            {
                assert!(
                    !writer_done.load(Ordering::SeqCst),
                    "the reader must reconnect while events are being written"
                );
                reconnected = true;
                break;
            }
        }
        assert!(reconnected, "the stream ended before {until} events");
    }
}

/// One writer appends 1,000 events through `writer` while two clients read: one from the
/// start, one that connects mid-stream and reconnects with `Last-Event-ID` at the live edge.
/// Both must receive every event exactly once, in order.
async fn streams_deliver_every_event_once(app: TestApp, writer: Store) {
    let repo = app.git_repo("widgets");
    let id = app.task(&app.admin, &repo).await;
    let task = TaskId::from_stored(id.clone());
    let task_id = task.clone();
    let total = 1 + 1000;
    let app = Arc::new(app);
    let written = Arc::new(AtomicI64::new(1));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = |reconnect| {
        let (app, id, written, done) = (app.clone(), id.clone(), written.clone(), done.clone());
        tokio::spawn(async move { read_stream(&app, &id, total, reconnect, &written, &done).await })
    };
    let early = reader(Reconnect::Never);
    let writing = tokio::spawn({
        let (written, done) = (written.clone(), done.clone());
        async move {
            for n in 0..1000 {
                let event = writer
                    .append_event(&task, EventKind::ToolCall, json!({"n": n}))
                    .await
                    .unwrap();
                written.store(event.seq, Ordering::SeqCst);
                if n % 5 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            done.store(true, Ordering::SeqCst);
        }
    });
    while written.load(Ordering::SeqCst) < 300 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        !done.load(Ordering::SeqCst),
        "the late reader must arrive mid-stream"
    );
    let late = reader(Reconnect::AtTheLiveEdge);
    let within = Duration::from_secs(60);
    let late = tokio::time::timeout(within, late)
        .await
        .expect("the late reader finishes")
        .unwrap();
    let early = tokio::time::timeout(within, early)
        .await
        .expect("the early reader finishes")
        .unwrap();
    writing.await.unwrap();
    let expected: Vec<i64> = (1..=total).collect();
    assert_eq!(early, expected);
    assert_eq!(late, expected);
    // The streams are gone, and so is their wake-up entry, once the server has seen the
    // connections close. It sees that when a write to them fails: the first write after the
    // close is still accepted by the kernel, the next one is refused. Two more events make
    // those writes now rather than at the keep-alive comments (every 15 s).
    for n in 0..2 {
        app.store
            .append_event(&task_id, EventKind::ToolCall, json!({"after": n}))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closing = std::time::Instant::now();
    while app.store.events().watched_tasks() != 0 {
        assert!(
            closing.elapsed() < Duration::from_secs(20),
            "a closed stream still holds its wake-up entry"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SQLite, with events written by the server's own store: streams wake on each write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_deliver_every_event_exactly_once_in_order() {
    let app = TestApp::start().await;
    let writer = app.store.clone();
    streams_deliver_every_event_once(app, writer).await;
}

/// PostgreSQL, with events written by another store (as a worker on another machine would):
/// nothing wakes the streams but their poll, and they still miss and repeat nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_on_postgres_see_other_writers_exactly_once() {
    let db = deft_testkit::TestDatabase::postgres().await;
    let app = TestApp::start_on(Setup {
        database_url: Some(db.url.clone()),
        ..Setup::default()
    })
    .await;
    let writer = Store::open(&db.url, test_key()).await.unwrap();
    streams_deliver_every_event_once(app, writer).await;
}

#[tokio::test]
async fn without_a_model_a_new_task_says_what_to_set() {
    let message = "no model is configured; set DEFT_MODEL=PROVIDER/NAME";
    let app = TestApp::start_with(ModelReadiness::Missing {
        message: message.into(),
    })
    .await;
    let repo = app.git_repo("widgets");
    let (status, task) = app
        .post(
            &app.admin,
            "/tasks",
            json!({"description": "x", "repos": [repo]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(task["state"], "needs_attention");
    assert_eq!(
        task["attention"],
        json!({"kind": "error", "message": message})
    );
    let health: Value = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["model"], json!({"ready": false, "message": message}));
    // Once the owner has set the model, answering puts the task back in the queue.
    let id = task["id"].as_str().unwrap();
    let (_, answered) = app
        .post(
            &app.admin,
            &format!("/tasks/{id}/answer"),
            json!({"message": "model set"}),
        )
        .await;
    assert_eq!(answered["state"], "queued");
}

#[tokio::test]
async fn every_refusal_keeps_the_error_shape_and_never_echoes_a_secret() {
    let app = TestApp::start().await;
    check_error(
        app.get(&app.admin, "/tasks/%FF").await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "bad path",
    );
    let (status, body) = app
        .call(
            &app.admin,
            Method::PUT,
            "/api/v1/secrets/TOKEN",
            Some(json!({"value": 987654321})),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("value"))
    );
    assert!(
        !body.to_string().contains("987654321"),
        "the value leaked: {body}"
    );
    let big = "x".repeat(2 * 1024 * 1024);
    check_error(
        app.post(
            &app.admin,
            "/tasks",
            json!({"description": big, "repos": []}),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "larger than 1 MiB",
    );
}

#[tokio::test]
async fn a_refused_task_registers_no_repository() {
    let app = TestApp::start().await;
    let repo = app.git_repo("widgets");
    check_error(
        app.post(
            &app.admin,
            "/tasks",
            json!({"description": " ", "repos": [repo]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "description: is empty",
    );
    let (_, repos) = app.get(&app.admin, "/repos").await;
    assert_eq!(repos["repos"], json!([]));
}

#[tokio::test]
async fn env_vars_change_one_at_a_time() {
    let app = TestApp::start().await;
    let put = |name: &'static str, value: &'static str| {
        let path = format!("/api/v1/settings/environment/env/{name}");
        let app = &app;
        async move {
            app.call(
                &app.admin,
                Method::PUT,
                &path,
                Some(json!({"value": value})),
            )
            .await
        }
    };
    let (a, b) = tokio::join!(put("A", "1"), put("B", "2"));
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK));
    let (_, environment) = app.get(&app.admin, "/settings/environment").await;
    assert_eq!(
        environment["env"],
        json!({"A": "1", "B": "2"}),
        "neither write undid the other"
    );
    let (status, _) = app
        .call(
            &app.admin,
            Method::DELETE,
            "/api/v1/settings/environment/env/A",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    check_error(
        app.call(
            &app.admin,
            Method::DELETE,
            "/api/v1/settings/environment/env/A",
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
        "environment variable not found",
    );
    let (status, body) = put("1BAD", "x").await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("env.1BAD"))
    );
}

#[tokio::test]
async fn local_repositories_come_only_from_where_the_server_allows() {
    // No roots configured: administrators only.
    let app = TestApp::start().await;
    let repo = app.git_repo("widgets");
    let bob = app.user("bob").await;
    check_error(
        app.post(&bob, "/repos", json!({"path": repo})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        "only an administrator may register local repositories",
    );
    let (status, _) = app.post(&app.admin, "/repos", json!({"path": repo})).await;
    assert_eq!(status, StatusCode::CREATED);

    // Roots configured: anyone, from inside them only, and outside reveals nothing.
    let outside = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let setup = Setup {
        local_roots: deft_forge::LocalRoots::only(vec![root.path().canonicalize().unwrap()]),
        ..Setup::default()
    };
    let app = TestApp::start_on(setup).await;
    let bob = app.user("bob").await;
    let inside = root.path().join("widgets");
    std::fs::create_dir(&inside).unwrap();
    let init = "git init -q -b main && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m init";
    assert!(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(init)
            .current_dir(&inside)
            .status()
            .unwrap()
            .success()
    );
    let (status, added) = app
        .post(
            &bob,
            "/repos",
            json!({"path": inside.canonicalize().unwrap()}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    for path in [
        outside.path().display().to_string(),
        "/etc".into(),
        "/no/such/dir".into(),
    ] {
        let (status, body) = app.post(&bob, "/repos", json!({"path": path})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("is not under the directories this server allows"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn metrics_count_tasks_by_state_requests_by_route_and_name_no_one() {
    let app = TestApp::start().await;
    let repo = app.git_repo("widgets");
    let id = app.task(&app.admin, &repo).await;
    let (status, _) = app
        .post(&app.admin, &format!("/tasks/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    app.task(&app.admin, &repo).await;

    let response = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "scrapers carry no token");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let body = response.text().await.unwrap();
    let value = |name: &str, labels: &[&str]| -> Option<f64> {
        body.lines()
            .filter(|line| line.starts_with(&format!("{name}{{")) || *line == name)
            .find(|line| labels.iter().all(|label| line.contains(label)))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(
        value("deft_tasks", &[r#"state="queued""#]),
        Some(1.0),
        "{body}"
    );
    assert_eq!(value("deft_tasks", &[r#"state="cancelled""#]), Some(1.0));
    assert_eq!(value("deft_tasks", &[r#"state="completed""#]), Some(0.0));
    assert_eq!(
        value("deft_task_state_changes_total", &[r#"to="cancelled""#]),
        Some(1.0)
    );
    assert_eq!(
        value(
            "deft_http_requests_total",
            &[
                r#"method="POST""#,
                r#"route="/api/v1/tasks""#,
                r#"status="201""#
            ]
        ),
        Some(2.0),
        "requests are counted by route pattern: {body}"
    );
    assert!(
        value(
            "deft_http_requests_total",
            &[r#"route="/api/v1/tasks/{id}/cancel""#]
        )
        .is_some(),
        "ids do not become labels: {body}"
    );
    assert!(
        !body.contains(&id) && !body.contains("admin"),
        "no task id or user name in the metrics: {body}"
    );
}

#[tokio::test]
async fn the_session_cookie_signs_in_and_changes_need_its_csrf_token() {
    let app = TestApp::start().await;
    let repo = app.git_repo("widgets");
    // An administrator: the repository is a local path.
    let ada = app.store.create_user("ada", true).await.unwrap();
    let session = app.store.start_session(&ada.id, 60_000).await.unwrap();
    let cookie = format!("theme=dark; deft_session={}", session.token);

    let me: Value = app
        .http
        .get(format!("{}/api/v1/me", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "ada", "{me}");

    let create = |csrf: Option<&str>| {
        let mut request = app
            .http
            .post(format!("{}/api/v1/tasks", app.base))
            .header("cookie", &cookie)
            .json(&json!({"description": "Add a health check", "repos": [repo]}));
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request.send()
    };
    let refused = create(None).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "csrf", "{body}");
    assert_eq!(
        create(Some("not-the-token")).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let tasks: Value = app
        .http
        .get(format!("{}/api/v1/tasks", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        tasks["tasks"].as_array().map(Vec::len),
        Some(0),
        "nothing was stored by the refused requests: {tasks}"
    );
    assert_eq!(
        create(Some(&session.csrf)).await.unwrap().status(),
        StatusCode::CREATED
    );

    app.store.end_session(&session.token).await.unwrap();
    let ended = app
        .http
        .get(format!("{}/api/v1/me", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::UNAUTHORIZED);
    let body: Value = ended.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sign in again"),
        "{body}"
    );
}

/// The hidden `csrf` field of a page's first form.
fn csrf_field(html: &str) -> String {
    let start = html
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF field")
        + 19;
    html[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn web_sign_in_sets_a_strict_cookie_refuses_forged_forms_and_pages_load_nothing_else() {
    // The test client stands for the TLS proxy, whose `X-Forwarded-Proto` is believed.
    let app = TestApp::start_on(Setup {
        trusted_proxies: deft_server::TrustedProxies::parse(["127.0.0.1"]).unwrap(),
        ..Setup::default()
    })
    .await;
    let ada = app.store.create_user("ada", false).await.unwrap();
    app.store
        .set_password(&ada.id, "correct horse battery")
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Signed out, a page sends you to sign in and remembers where you were going.
    let away = http
        .get(format!("{}/settings?x=1", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(away.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        away.headers()["location"],
        "/login?next=%2Fsettings%3Fx%3D1"
    );

    let login = http
        .get(format!("{}/login", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let csp = login.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let login_cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(login_cookie.contains("HttpOnly"), "{login_cookie}");
    let login_cookie = login_cookie.split(';').next().unwrap().to_owned();
    let html = login.text().await.unwrap();
    assert!(html.contains(r#"<meta charset="utf-8">"#));
    let csrf = csrf_field(&html);

    let sign_in = |fields: String, proto: Option<&'static str>| {
        let mut request = http
            .post(format!("{}/login", app.base))
            .header("cookie", &login_cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(fields);
        if let Some(proto) = proto {
            request = request.header("x-forwarded-proto", proto);
        }
        request.send()
    };
    // Without the form's token, or with a wrong password: refused, no session.
    let forged = sign_in("name=ada&password=correct+horse+battery".into(), None)
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(forged.headers().get("set-cookie").is_none());
    let wrong = sign_in(
        format!("csrf={csrf}&name=ada&password=wrong+horse+battery"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("Wrong user name or password")
    );

    // Signed in: the cookie is HttpOnly and SameSite=Lax, Secure only behind TLS, and the
    // way back goes to this site only.
    let fields =
        |next: &str| format!("csrf={csrf}&name=ada&password=correct+horse+battery&next={next}");
    let plain = sign_in(fields("%2Fsettings"), None).await.unwrap();
    assert_eq!(plain.status(), StatusCode::SEE_OTHER);
    assert_eq!(plain.headers()["location"], "/settings");
    let session = plain
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("deft_session="))
        .unwrap();
    for part in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(part), "{session}");
    }
    assert!(!session.contains("Secure"), "{session}");
    let tls = sign_in(fields("%2F%2Fevil.example%2F"), Some("https"))
        .await
        .unwrap();
    assert_eq!(
        tls.headers()["location"],
        "/tasks",
        "no way out to another site"
    );
    let secure = tls.headers().get_all("set-cookie").iter().any(|v| {
        let v = v.to_str().unwrap();
        v.starts_with("deft_session=") && v.contains("Secure")
    });
    assert!(secure, "behind TLS the cookie is Secure");

    // Signed in, pages render; a form without the session's token changes nothing.
    let cookie = session.split(';').next().unwrap().to_owned();
    let settings = http
        .get(format!("{}/settings", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(settings.status(), StatusCode::OK);
    let page_csrf = csrf_field(&settings.text().await.unwrap());
    let post_env = |fields: String| {
        http.post(format!("{}/settings/env", app.base))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(fields)
            .send()
    };
    let forged = post_env("name=REGION&value=eu".into()).await.unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(
        app.store
            .environment(&ada.id)
            .await
            .unwrap()
            .env
            .as_map()
            .is_empty()
    );
    let bad = post_env(format!("csrf={page_csrf}&name=1BAD&value=eu"))
        .await
        .unwrap();
    // Refused: back to the settings (post/redirect/get), where the message and what was typed
    // are drawn once.
    assert_eq!(bad.status(), StatusCode::SEE_OTHER);
    assert_eq!(bad.headers()["location"], "/settings#env");
    let page = http
        .get(format!("{}/settings", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"id="env-error""#) && page.contains(r#"value="1BAD""#));
    let saved = post_env(format!("csrf={page_csrf}&name=REGION&value=eu"))
        .await
        .unwrap();
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.store.environment(&ada.id).await.unwrap().env.as_map()["REGION"],
        "eu"
    );

    // A long log: the page shows its end and links to the earlier events.
    let repo = app
        .store
        .add_repository(
            &ada.id,
            deft_store::NewRepository {
                name: "widgets".into(),
                forge: deft_core::ForgeKind::Local,
                location: app.git_repo("widgets"),
                default_branch: "main".into(),
            },
        )
        .await
        .unwrap();
    let task = app
        .store
        .create_task(
            &ada.id,
            deft_store::NewTask {
                description: "A long one".into(),
                repos: vec![repo.id],
                chat_id: None,
                approve_plan: false,
            },
        )
        .await
        .unwrap()
        .id;
    for n in 0..420 {
        let step =
            deft_core::StepEvent::new(deft_core::WorkStep::Execution, deft_core::StepStatus::Done)
                .summary(format!("s{n}"));
        app.store
            .append_event(&task, deft_core::EventKind::Step, step.to_data())
            .await
            .unwrap();
    }
    let base = app.base.clone();
    let page = |path: String| {
        let (http, cookie, base) = (http.clone(), cookie.clone(), base.clone());
        async move {
            let response = http
                .get(format!("{base}{path}"))
                .header("cookie", &cookie)
                .header("accept", "text/html")
                .send()
                .await
                .unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };
    let (status, missing) = page("/no/such/page".into()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        missing.contains("There is no page at this address"),
        "{missing}"
    );
    let (status, end) = page(format!("/tasks/{task}")).await;
    assert_eq!(status, StatusCode::OK);
    // Over the page's 400 events: the live end, light, with a link to the events before it.
    assert!(
        end.len() < 100 * 1024,
        "the end of the log weighs {}",
        end.len()
    );
    assert!(end.contains("data-after=\"421\""), "the end is live");
    let earlier = end
        .split("id=\"earlier\"")
        .next()
        .and_then(|head| head.rsplit("href=\"").next())
        .and_then(|href| href.split('"').next())
        .expect("earlier events are linked")
        .replace("&amp;", "&");
    assert!(earlier.contains("before="), "{earlier}");
    let (status, start) = page(earlier).await;
    assert_eq!(status, StatusCode::OK);
    assert!(start.contains("Later events"), "an earlier page links on");
    assert!(
        !start.contains("data-after="),
        "an earlier page is not live"
    );
    // Signing out ends the session on the server, not only in the browser.
    let out = http
        .post(format!("{}/logout", app.base))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={page_csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let token = cookie.trim_start_matches("deft_session=");
    assert!(app.store.session(token).await.unwrap().is_none());

    for asset in ["/assets/app.css", "/assets/app.js"] {
        let response = http
            .get(format!("{}{asset}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        assert!(response.text().await.unwrap().len() > 500, "{asset}");
    }
}

/// A browser on the sign-in page: its own loopback address (the server sees a distinct
/// client), and the form's cookie and token.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

/// What a sign-in came to.
struct SignedIn {
    status: StatusCode,
    page: String,
    /// The session cookie's `Set-Cookie`, when a session began.
    session: Option<String>,
}

impl Browser {
    async fn open(app: &TestApp, local: &str) -> Browser {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .local_address(local.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap();
        let login = http
            .get(format!("{}/login", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), StatusCode::OK);
        let cookie = login.headers()["set-cookie"].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let csrf = csrf_field(&login.text().await.unwrap());
        Browser {
            http,
            base: app.base.clone(),
            cookie,
            csrf,
        }
    }

    async fn finish(response: reqwest::Response) -> SignedIn {
        let status = response.status();
        let session = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|c| c.starts_with("deft_session="));
        SignedIn {
            status,
            page: response.text().await.unwrap(),
            session,
        }
    }

    /// Signs in as `name`; `headers` are what a proxy in front would add.
    async fn sign_in(&self, name: &str, password: &str, headers: &[(&str, &str)]) -> SignedIn {
        let mut request = self
            .http
            .post(format!("{}/login", self.base))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "csrf={}&name={name}&password={password}",
                self.csrf
            ));
        for (header, value) in headers {
            request = request.header(*header, *value);
        }
        Browser::finish(request.send().await.unwrap()).await
    }

    /// Redeems a one-time login link by its button.
    async fn redeem(&self, link: &str) -> SignedIn {
        let url = format!("{}/login/link/{link}", self.base);
        let page = self
            .http
            .get(&url)
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let csrf = csrf_field(&page.text().await.unwrap());
        let redeemed = self
            .http
            .post(&url)
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={csrf}"))
            .send()
            .await
            .unwrap();
        Browser::finish(redeemed).await
    }
}

const ADMIN_PASSWORD: &str = "correct-horse-battery";

async fn admin_with_password(app: &TestApp) -> deft_core::User {
    let admin = app.store.user_by_name("admin").await.unwrap();
    app.store
        .set_password(&admin.id, ADMIN_PASSWORD)
        .await
        .unwrap();
    admin
}

#[tokio::test]
async fn failures_at_an_account_lock_out_only_the_client_that_made_them() {
    let app = TestApp::start().await;
    let admin = admin_with_password(&app).await;
    let guesser = Browser::open(&app, "127.0.0.2").await;
    let owner = Browser::open(&app, "127.0.0.3").await;
    for n in 0..5 {
        let wrong = guesser.sign_in("admin", &format!("guess{n}"), &[]).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.page);
    }
    // The owner, from another client, signs in...
    let signed_in = owner.sign_in("admin", ADMIN_PASSWORD, &[]).await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.page
    );
    assert!(signed_in.session.is_some());
    // ...while the guessing client is refused even the right password, and told what to do.
    let refused = guesser.sign_in("admin", ADMIN_PASSWORD, &[]).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.session.is_none());
    for part in [
        "Too many failed sign-ins from this browser; try again in 15 minutes",
        "ask an administrator for a one-time link: `deft user link admin`",
    ] {
        assert!(refused.page.contains(part), "{part:?} in {}", refused.page);
    }

    // A one-time link opens the account even from the locked-out client, and forgives that
    // client's failures there.
    let link = app
        .store
        .create_login_link(&admin.id, 60_000)
        .await
        .unwrap();
    let redeemed = guesser.redeem(&link).await;
    assert_eq!(redeemed.status, StatusCode::SEE_OTHER, "{}", redeemed.page);
    assert!(redeemed.session.is_some());
    let again = guesser.sign_in("admin", ADMIN_PASSWORD, &[]).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.page);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    // The test client is the proxy: every request comes from 127.0.0.1.
    let app = TestApp::start_on(Setup {
        trusted_proxies: deft_server::TrustedProxies::parse(["127.0.0.1", "10.0.0.0/8"]).unwrap(),
        ..Setup::default()
    })
    .await;
    admin_with_password(&app).await;
    let proxy = Browser::open(&app, "127.0.0.1").await;
    let from = |client: &'static str| [("x-forwarded-for", client)];

    // One guesser behind the proxy locks out itself...
    for n in 0..5 {
        let wrong = proxy
            .sign_in("admin", &format!("guess{n}"), &from("198.51.100.66"))
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    }
    let refused = proxy
        .sign_in("admin", ADMIN_PASSWORD, &from("198.51.100.66"))
        .await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    // ...and cannot pass for another client by sending its own X-Forwarded-For, which the
    // proxy appends to: the rightmost address not a trusted proxy is the client.
    let spoofed = proxy
        .sign_in(
            "admin",
            ADMIN_PASSWORD,
            &from("192.0.2.10, 198.51.100.66, 10.1.2.3"),
        )
        .await;
    assert_eq!(spoofed.status, StatusCode::TOO_MANY_REQUESTS);

    // Many guessers, well past the thirty failures one address may make and the account's
    // ceiling, each failing once: every one is heard as itself...
    for n in 0..60 {
        let wrong = proxy
            .sign_in(
                "admin",
                "not-the-password",
                &[("x-forwarded-for", &format!("203.0.113.{n}"))],
            )
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "attempt {n}");
    }
    // ...and past the ceiling, one that has failed is refused another guess...
    let again = proxy
        .sign_in("admin", "not-the-password", &from("203.0.113.1"))
        .await;
    assert_eq!(again.status, StatusCode::TOO_MANY_REQUESTS);
    // ...while the owner, another client behind the same proxy, signs in, the cookie
    // `Secure` because the trusted proxy says it spoke TLS.
    let owner = proxy
        .sign_in(
            "admin",
            ADMIN_PASSWORD,
            &[
                ("x-forwarded-for", "192.0.2.10"),
                ("x-forwarded-proto", "https"),
            ],
        )
        .await;
    assert_eq!(owner.status, StatusCode::SEE_OTHER, "{}", owner.page);
    assert!(owner.session.unwrap().contains("Secure"));
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    // A proxy is configured, but the test client is not it.
    let app = TestApp::start_on(Setup {
        trusted_proxies: deft_server::TrustedProxies::parse(["10.0.0.0/8"]).unwrap(),
        ..Setup::default()
    })
    .await;
    admin_with_password(&app).await;
    let attacker = Browser::open(&app, "127.0.0.1").await;
    // A fresh address claimed for every guess does not dodge the limit on one client.
    for n in 0..30 {
        let wrong = attacker
            .sign_in(
                &format!("someone{n}"),
                "not-the-password",
                &[("x-forwarded-for", &format!("203.0.113.{n}"))],
            )
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "attempt {n}");
    }
    let refused = attacker
        .sign_in(
            "admin",
            ADMIN_PASSWORD,
            &[("x-forwarded-for", "203.0.113.200")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    // Nor does a client's own `X-Forwarded-Proto: https` make the cookie `Secure` (it would
    // then never come back over the plain HTTP it really spoke).
    let other = Browser::open(&app, "127.0.0.2").await;
    let signed_in = other
        .sign_in("admin", ADMIN_PASSWORD, &[("x-forwarded-proto", "https")])
        .await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.page
    );
    assert!(!signed_in.session.unwrap().contains("Secure"));
}

/// The task page lists the web pages the task read or cited, by their `[n]`, as links only
/// when they are http(s) addresses.
#[tokio::test]
async fn the_task_page_lists_its_sources_as_links() {
    let app = TestApp::start().await;
    let ada = app.store.create_user("ada", true).await.unwrap();
    let session = app.store.start_session(&ada.id, 60_000).await.unwrap();
    let cookie = format!("deft_session={}", session.token);
    let repo = app
        .store
        .add_repository(
            &ada.id,
            deft_store::NewRepository {
                name: "widgets".into(),
                forge: deft_core::ForgeKind::Local,
                location: app.git_repo("widgets"),
                default_branch: "main".into(),
            },
        )
        .await
        .unwrap();
    let task = app
        .store
        .create_task(
            &ada.id,
            deft_store::NewTask {
                description: "Follow the guide".into(),
                repos: vec![repo.id],
                chat_id: None,
                approve_plan: false,
            },
        )
        .await
        .unwrap()
        .id;
    let mut progress = deft_core::Progress::new();
    progress.sources = vec![
        deft_core::Source {
            url: "https://docs.example.org/guide".into(),
            title: "The <b>guide</b>".into(),
            fetched: true,
        },
        deft_core::Source {
            url: "javascript:alert(1)".into(),
            title: "A trap".into(),
            fetched: false,
        },
    ];
    app.store.set_progress(&task, &progress).await.unwrap();
    let html = app
        .http
        .get(format!("{}/tasks/{task}", app.base))
        .header("cookie", &cookie)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(r#"<li id="source-1" value="1"><a href="https://docs.example.org/guide" rel="noopener noreferrer nofollow">The &#60;b&#62;guide&#60;/b&#62;</a>"#),
        "{html}"
    );
    assert!(html.contains("· read"), "{html}");
    assert!(
        html.contains(r#"<li id="source-2" value="2">A trap"#)
            && !html.contains(r#"href="javascript"#),
        "{html}"
    );
}
