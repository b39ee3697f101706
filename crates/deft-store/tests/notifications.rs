//! Notification settings and deliveries, on SQLite and on PostgreSQL: the webhook's secret is
//! sealed and comes back only to sign, each channel keeps its last delivery, another user's
//! settings are apart, and state changes reach a listener of this process's bus.

use deft_core::{Attention, AttentionKind, ForgeKind, TaskId, Timestamp, Transition};
use deft_store::{
    Actor, Delivery, MasterKey, NewRepository, NewTask, NotificationSettings, Store, StoreError,
    Webhook, WebhookFormat,
};
use deft_testkit::TestDatabase;

deft_testkit::on_both!(
    a_webhook_keeps_its_secret_sealed_and_apart_per_user,
    a_webhook_without_a_secret_is_refused,
    email_settings_round_trip,
    each_channel_keeps_its_last_delivery,
    state_changes_reach_a_listener_on_the_bus,
);

async fn open(db: &TestDatabase) -> Store {
    let key = MasterKey::from_hex(&"22".repeat(32)).unwrap();
    Store::open(&db.url, key)
        .await
        .expect("the test database opens")
}

fn hook(url: &str, format: WebhookFormat) -> Webhook {
    Webhook {
        url: url.to_owned(),
        format,
    }
}

async fn a_webhook_keeps_its_secret_sealed_and_apart_per_user(store: Store) {
    let ada = store.create_user("ada", false).await.unwrap();
    let bob = store.create_user("bob", false).await.unwrap();
    assert_eq!(
        store.notification_settings(&ada.id).await.unwrap(),
        NotificationSettings::default()
    );
    let first = hook("https://hooks.example.com/a", WebhookFormat::Json);
    store
        .set_webhook(&ada.id, &first, Some("s3cret-value"))
        .await
        .unwrap();
    // The secret is not stored as written.
    let stored = store
        .webhook_secret(&ada.id)
        .await
        .unwrap()
        .expect("a secret");
    assert_eq!(stored, "s3cret-value");
    // A change of URL and format keeps the secret.
    let second = hook("https://hooks.example.com/b", WebhookFormat::Slack);
    store.set_webhook(&ada.id, &second, None).await.unwrap();
    let settings = store.notification_settings(&ada.id).await.unwrap();
    assert_eq!(settings.webhook, Some(second));
    assert_eq!(
        store.webhook_secret(&ada.id).await.unwrap().as_deref(),
        Some("s3cret-value")
    );
    // Bob sees nothing of Ada's.
    assert_eq!(
        store.notification_settings(&bob.id).await.unwrap(),
        NotificationSettings::default()
    );
    assert_eq!(store.webhook_secret(&bob.id).await.unwrap(), None);
    store.remove_webhook(&ada.id).await.unwrap();
    assert_eq!(
        store.notification_settings(&ada.id).await.unwrap().webhook,
        None
    );
    assert_eq!(store.webhook_secret(&ada.id).await.unwrap(), None);
}

async fn a_webhook_without_a_secret_is_refused(store: Store) {
    let ada = store.create_user("ada", false).await.unwrap();
    let error = store
        .set_webhook(
            &ada.id,
            &hook("https://hooks.example.com/a", WebhookFormat::Json),
            None,
        )
        .await
        .unwrap_err();
    match error {
        StoreError::Invalid(error) => assert_eq!(error.field, "webhook.secret"),
        other => panic!("expected a refusal naming the secret, got {other:?}"),
    }
    // Nothing was kept.
    assert_eq!(
        store.notification_settings(&ada.id).await.unwrap().webhook,
        None
    );
}

async fn email_settings_round_trip(store: Store) {
    let ada = store.create_user("ada", false).await.unwrap();
    store
        .set_email(&ada.id, Some("ada@example.com"), true)
        .await
        .unwrap();
    let settings = store.notification_settings(&ada.id).await.unwrap();
    assert_eq!(settings.email.as_deref(), Some("ada@example.com"));
    assert!(settings.email_enabled);
    store
        .set_email(&ada.id, Some("ada@example.com"), false)
        .await
        .unwrap();
    assert!(
        !store
            .notification_settings(&ada.id)
            .await
            .unwrap()
            .email_enabled
    );
}

async fn each_channel_keeps_its_last_delivery(store: Store) {
    let ada = store.create_user("ada", false).await.unwrap();
    let task = TaskId::generate();
    let delivery = |channel: &str, ok: bool, detail: String| Delivery {
        channel: channel.to_owned(),
        task_id: Some(task.clone()),
        event: "task.asked".to_owned(),
        ok,
        detail,
        at: Timestamp::from_unix_millis(1_700_000_000_000),
    };
    store
        .record_notification(&ada.id, &delivery("webhook", false, "x".repeat(5000)))
        .await
        .unwrap();
    store
        .record_notification(&ada.id, &delivery("webhook", true, "200".into()))
        .await
        .unwrap();
    store
        .record_notification(&ada.id, &delivery("email", false, "é".repeat(400)))
        .await
        .unwrap();
    let deliveries = store.notification_deliveries(&ada.id).await.unwrap();
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[1], delivery("webhook", true, "200".into()));
    // A long detail is cut on a character boundary.
    assert!(
        deliveries[0].detail.len() <= 504,
        "{}",
        deliveries[0].detail.len()
    );
    assert!(deliveries[0].detail.ends_with('…'));
    let bob = store.create_user("bob", false).await.unwrap();
    assert!(
        store
            .notification_deliveries(&bob.id)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn state_changes_reach_a_listener_on_the_bus(store: Store) {
    let ada = store.create_user("ada", false).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = store
        .add_repository(
            &ada.id,
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
            &ada.id,
            NewTask {
                description: "Add a health check".into(),
                repos: vec![repo.id],
                chat_id: None,
                approve_plan: false,
            },
        )
        .await
        .unwrap();
    let mut changes = store.events().state_changes();
    store
        .transition(Actor::Deft, &task.id, Transition::Start, None)
        .await
        .unwrap();
    let asked = Attention {
        kind: AttentionKind::Question,
        message: "Which port?".into(),
    };
    store
        .transition(
            Actor::Deft,
            &task.id,
            Transition::NeedAttention(asked),
            None,
        )
        .await
        .unwrap();
    let started = changes.recv().await.unwrap();
    assert_eq!(started.data["to"], "in_progress");
    let waiting = changes.recv().await.unwrap();
    assert_eq!(waiting.task_id, task.id);
    assert_eq!(waiting.data["to"], "needs_attention");
    assert_eq!(waiting.data["attention"]["kind"], "question");
    assert_eq!(waiting.data["attention"]["message"], "Which port?");
}
