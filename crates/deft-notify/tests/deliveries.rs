//! Deliveries against real receivers on 127.0.0.1: a real store's state changes reach the
//! notifier through the store's bus, webhooks arrive signed (checked here with our own HMAC),
//! e-mail reaches an SMTP sink, and failures are recorded without touching the task.

use std::time::Duration;

use deft_core::{Attention, AttentionKind, ForgeKind, Task, TaskState, Transition, User};
use deft_notify::{Notifier, NotifyConfig, SmtpConfig, SmtpTls};
use deft_store::{Actor, MasterKey, NewRepository, NewTask, Store, Webhook, WebhookFormat};
use deft_testkit::TestDatabase;
use deft_testkit::smtp_sink::SmtpSink;
use deft_testkit::webhook_sink::{Received, WebhookSink};
use hmac::{Hmac, Mac};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "test-secret-0123456789";
const WAIT: Duration = Duration::from_secs(10);

struct Setup {
    store: Store,
    user: User,
    task: Task,
    _db: TestDatabase,
    _dir: tempfile::TempDir,
    stop: CancellationToken,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn quick(allow_private: bool) -> NotifyConfig {
    NotifyConfig {
        public_url: Some("http://127.0.0.1:7878".into()),
        allow_private_targets: allow_private,
        attempts: 2,
        first_pause: Duration::from_millis(50),
        timeout: Duration::from_secs(5),
        ..NotifyConfig::default()
    }
}

async fn setup(config: NotifyConfig) -> Setup {
    let db = TestDatabase::sqlite();
    let store = Store::open(&db.url, MasterKey::from_hex(&"33".repeat(32)).unwrap())
        .await
        .unwrap();
    let user = store.create_user("ada", false).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = store
        .add_repository(
            &user.id,
            NewRepository {
                name: "widgets".into(),
                forge: ForgeKind::Local,
                location: dir.path().to_string_lossy().into_owned(),
                default_branch: "main".into(),
            },
        )
        .await
        .unwrap();
    let task = store
        .create_task(
            &user.id,
            NewTask {
                description: "Add a <b>health</b> check\n\nwith details".into(),
                repos: vec![repo.id],
                chat_id: None,
                approve_plan: false,
            },
        )
        .await
        .unwrap();
    let stop = CancellationToken::new();
    Notifier::new(store.clone(), config).start(stop.clone());
    Setup {
        store,
        user,
        task,
        _db: db,
        _dir: dir,
        stop,
    }
}

impl Setup {
    async fn step(&self, transition: Transition) -> Task {
        self.store
            .transition(Actor::Deft, &self.task.id, transition, None)
            .await
            .expect("the transition is allowed")
    }

    async fn attention(&self, kind: AttentionKind, message: &str) -> Task {
        self.step(Transition::NeedAttention(Attention {
            kind,
            message: message.into(),
        }))
        .await
    }

    async fn hook(&self, url: &str, format: WebhookFormat) {
        let webhook = Webhook {
            url: url.into(),
            format,
        };
        self.store
            .set_webhook(&self.user.id, &webhook, Some(SECRET))
            .await
            .unwrap();
    }

    /// Waits for the channel's recorded delivery of `event`.
    async fn delivery(&self, channel: &str, event: &str) -> deft_store::Delivery {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let found = self
                .store
                .notification_deliveries(&self.user.id)
                .await
                .unwrap()
                .into_iter()
                .find(|delivery| delivery.channel == channel && delivery.event == event);
            if let Some(found) = found {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {channel} delivery of {event}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Checks the signature the way a receiver would: HMAC-SHA256 of the raw body under the secret.
fn verify(request: &Received) {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&request.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(request.header("x-deft-signature-256"), Some(expected));
    // A different secret gives another signature: the check can fail.
    let mut other = Hmac::<sha2::Sha256>::new_from_slice(b"another").unwrap();
    other.update(&request.body);
    let wrong = format!("sha256={}", hex::encode(other.finalize().into_bytes()));
    assert_ne!(request.header("x-deft-signature-256"), Some(wrong));
}

#[tokio::test]
async fn each_of_the_four_moments_reaches_the_webhook_signed() {
    let sink = WebhookSink::start().await;
    let s = setup(quick(true)).await;
    s.hook(&sink.url("/hook"), WebhookFormat::Json).await;
    s.step(Transition::Start).await;
    s.attention(AttentionKind::Question, "Which port?").await;
    s.step(Transition::Answer).await;
    s.step(Transition::Start).await;
    s.attention(
        AttentionKind::PlanApproval,
        "The plan waits for your approval.",
    )
    .await;
    s.step(Transition::Approve).await;
    s.step(Transition::Start).await;
    s.attention(
        AttentionKind::Error,
        "The model refused the key; set DEFT_MODEL_API_KEY.",
    )
    .await;
    s.step(Transition::Answer).await;
    s.step(Transition::Start).await;
    let done = s.step(Transition::Complete).await;
    assert_eq!(done.state(), TaskState::Completed);
    let received = sink.wait_for(4, WAIT).await;
    assert_eq!(received.len(), 4, "{received:?}");
    let mut events: Vec<String> = received
        .iter()
        .map(|request| request.json()["event"].as_str().unwrap().to_owned())
        .collect();
    events.sort();
    assert_eq!(
        events,
        [
            "task.asked",
            "task.completed",
            "task.failed",
            "task.plan_approval"
        ]
    );
    for request in &received {
        verify(request);
        let body = request.json();
        assert_eq!(request.path, "/hook");
        assert_eq!(
            request.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(
            request.header("x-deft-event"),
            body["event"].as_str().map(str::to_owned)
        );
        assert_eq!(
            request.header("x-deft-delivery"),
            body["delivery"].as_str().map(str::to_owned)
        );
        assert!(
            request
                .header("x-deft-timestamp")
                .unwrap()
                .parse::<i64>()
                .unwrap()
                > 1_700_000_000
        );
        assert_eq!(body["task_id"], s.task.id.as_str());
        assert_eq!(body["title"], "Add a <b>health</b> check");
        assert_eq!(
            body["url"],
            format!("http://127.0.0.1:7878/tasks/{}", s.task.id)
        );
        let (status, reason) = match body["event"].as_str().unwrap() {
            "task.asked" => ("needs_attention", serde_json::json!("Which port?")),
            "task.plan_approval" => (
                "needs_attention",
                serde_json::json!("The plan waits for your approval."),
            ),
            "task.failed" => (
                "needs_attention",
                serde_json::json!("The model refused the key; set DEFT_MODEL_API_KEY."),
            ),
            _ => ("completed", serde_json::Value::Null),
        };
        assert_eq!(body["status"], status);
        assert_eq!(body["reason"], reason);
        assert!(body["time"].as_str().unwrap().ends_with('Z'));
    }
    let delivery = s.delivery("webhook", "task.completed").await;
    assert!(delivery.ok);
    assert_eq!(delivery.detail, "200");
}

#[tokio::test]
async fn a_slack_webhook_gets_text_with_slack_markup_escaped() {
    let sink = WebhookSink::start().await;
    let s = setup(quick(true)).await;
    s.hook(&sink.url("/slack"), WebhookFormat::Slack).await;
    s.step(Transition::Start).await;
    s.attention(AttentionKind::Question, "Ping <!channel>?")
        .await;
    let received = sink.wait_for(1, WAIT).await;
    assert_eq!(received.len(), 1);
    verify(&received[0]);
    let body = received[0].json();
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["text"]);
    assert_eq!(
        body["text"],
        format!(
            "deft: *Add a &lt;b&gt;health&lt;/b&gt; check* asks: Ping &lt;!channel&gt;? <http://127.0.0.1:7878/tasks/{}|Open the task>",
            s.task.id
        )
    );
}

#[tokio::test]
async fn a_failing_receiver_is_tried_again_and_recorded_without_touching_the_task() {
    let sink = WebhookSink::start().await;
    let s = setup(quick(true)).await;
    s.hook(&sink.url("/flaky"), WebhookFormat::Json).await;
    // A 503 is transient: tried again, then delivered.
    sink.answer_with(&[503]);
    s.step(Transition::Start).await;
    s.attention(AttentionKind::Question, "Which port?").await;
    assert_eq!(sink.wait_for(2, WAIT).await.len(), 2);
    let delivery = s.delivery("webhook", "task.asked").await;
    assert!(delivery.ok, "{delivery:?}");
    // A 404 is not tried again.
    sink.answer_with(&[404]);
    s.step(Transition::Answer).await;
    s.step(Transition::Start).await;
    s.attention(AttentionKind::PlanApproval, "Approve?").await;
    let delivery = s.delivery("webhook", "task.plan_approval").await;
    assert!(!delivery.ok);
    assert!(
        delivery.detail.contains("answered 404"),
        "{}",
        delivery.detail
    );
    assert_eq!(sink.received().len(), 3);
    // A redirect is not followed.
    sink.answer_with(&[302]);
    s.step(Transition::Approve).await;
    s.step(Transition::Start).await;
    s.attention(AttentionKind::Error, "boom").await;
    let delivery = s.delivery("webhook", "task.failed").await;
    assert!(!delivery.ok);
    assert!(
        delivery.detail.contains("deft follows none"),
        "{}",
        delivery.detail
    );
    assert!(
        sink.received()
            .iter()
            .all(|request| request.path != "/elsewhere")
    );
    // Nothing answers: two attempts, recorded as a failure; the task went on all along.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/gone", closed.local_addr().unwrap());
    drop(closed);
    s.hook(&url, WebhookFormat::Json).await;
    s.step(Transition::Answer).await;
    s.step(Transition::Start).await;
    let done = s.step(Transition::Complete).await;
    assert_eq!(done.state(), TaskState::Completed);
    let delivery = s.delivery("webhook", "task.completed").await;
    assert!(!delivery.ok);
    assert!(
        delivery.detail.contains("cannot reach 127.0.0.1"),
        "{}",
        delivery.detail
    );
    assert!(
        delivery.detail.contains("(2 attempts)"),
        "{}",
        delivery.detail
    );
    assert_eq!(
        s.store.task(&s.user.id, &s.task.id).await.unwrap().state(),
        TaskState::Completed
    );
}

#[tokio::test]
async fn this_machine_is_refused_unless_the_operator_allows_private_targets() {
    let sink = WebhookSink::start().await;
    let s = setup(quick(false)).await;
    // Stored past the form's check, as if saved before the operator changed the policy.
    s.hook(&sink.url("/inside"), WebhookFormat::Json).await;
    s.step(Transition::Start).await;
    s.attention(AttentionKind::Question, "Which port?").await;
    let delivery = s.delivery("webhook", "task.asked").await;
    assert!(!delivery.ok);
    assert!(
        delivery.detail.contains("public addresses only")
            && delivery.detail.contains("allow_private_targets"),
        "{}",
        delivery.detail
    );
    // A name that resolves to this machine is refused the same way.
    s.hook(
        &format!("http://localhost:{}/inside", sink.address.port()),
        WebhookFormat::Json,
    )
    .await;
    s.step(Transition::Answer).await;
    s.step(Transition::Start).await;
    s.step(Transition::Complete).await;
    let delivery = s.delivery("webhook", "task.completed").await;
    assert!(!delivery.ok);
    assert!(
        delivery.detail.contains("localhost resolves to"),
        "{}",
        delivery.detail
    );
    assert!(sink.received().is_empty(), "nothing may reach this machine");
}

#[tokio::test]
async fn email_reaches_the_smtp_server_with_the_subject_and_the_link() {
    let sink = SmtpSink::start().await;
    let mut config = quick(true);
    config.smtp = Some(SmtpConfig {
        host: "127.0.0.1".into(),
        port: sink.address.port(),
        tls: SmtpTls::None,
        from: deft_notify::parse_mailbox("deft <deft@example.com>").unwrap(),
        credentials: None,
        timeout: Duration::from_secs(5),
    });
    let s = setup(config).await;
    s.store
        .set_email(&s.user.id, Some("ada@example.com"), true)
        .await
        .unwrap();
    s.step(Transition::Start).await;
    s.attention(AttentionKind::Question, "Which port?").await;
    let mails = sink.wait_for(1, WAIT).await;
    assert_eq!(mails.len(), 1, "violations: {:?}", sink.violations());
    let mail = &mails[0];
    assert_eq!(mail.from, "deft@example.com");
    assert_eq!(mail.to, ["ada@example.com"]);
    assert_eq!(mail.header("To").as_deref(), Some("ada@example.com"));
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("[deft] Asks: Add a <b>health</b> check")
    );
    let link = format!("http://127.0.0.1:7878/tasks/{}", s.task.id);
    assert!(
        mail.text().contains(&format!("Open the task: {link}\r\n")),
        "{}",
        mail.data
    );
    assert!(mail.text().contains("Which port?"), "{}", mail.data);
    assert!(sink.violations().is_empty(), "{:?}", sink.violations());
    let delivery = s.delivery("email", "task.asked").await;
    assert!(delivery.ok, "{delivery:?}");
    // Turned off, no more mail.
    s.store
        .set_email(&s.user.id, Some("ada@example.com"), false)
        .await
        .unwrap();
    s.step(Transition::Answer).await;
    s.step(Transition::Start).await;
    s.step(Transition::Complete).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.mails().len(), 1);
}
