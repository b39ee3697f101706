//! Test support for deft's own tests: a fresh database per test, on SQLite or PostgreSQL, a
//! scripted model server ([`model_server`]) that speaks the providers' wire protocols, and a
//! real image builder ([`podman`]) with an offline Debian base image, and receivers of deft's
//! notifications: an SMTP server ([`smtp_sink`]) and a webhook endpoint ([`webhook_sink`]).
//!
//! Only a dev-dependency. PostgreSQL tests take the server from `DEFT_TEST_DATABASE_URL` (the
//! README's test command starts one and sets it) and give each test its own schema, so that
//! tests run in parallel on one server without seeing each other's rows.

pub mod github_server;
pub mod model_server;
pub mod npm_registry;
pub mod podman;
pub mod rootfs;
pub mod smtp_sink;
pub mod webhook_sink;

use sqlx::Connection as _;

/// The variable naming the PostgreSQL server for tests.
pub const TEST_DATABASE_URL: &str = "DEFT_TEST_DATABASE_URL";

/// Runs each `async fn CASE(store)` of the calling test file twice, on a new SQLite database
/// and on a new PostgreSQL one, each opened by the file's own `async fn open(&TestDatabase)`.
#[macro_export]
macro_rules! on_both {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let db = $crate::TestDatabase::sqlite();
                super::$case(super::open(&db).await).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let db = $crate::TestDatabase::postgres().await;
                super::$case(super::open(&db).await).await;
            })*
        }
    };
}

/// A database URL for one test, and what keeps it alive until the test ends.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// A new SQLite file in a temporary directory.
    pub fn sqlite() -> TestDatabase {
        let dir = tempfile::tempdir().expect("a temporary directory can be made");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("deft.db").display());
        TestDatabase {
            url,
            _dir: Some(dir),
        }
    }

    /// A new, empty schema on the test PostgreSQL server. Panics with what to do when
    /// `DEFT_TEST_DATABASE_URL` is not set: a PostgreSQL test that silently passes without a
    /// server would check nothing.
    pub async fn postgres() -> TestDatabase {
        let base = std::env::var(TEST_DATABASE_URL).unwrap_or_else(|_| {
            panic!(
                "{TEST_DATABASE_URL} is not set: these tests need PostgreSQL. Run the whole suite \
                 with `scripts/test`, which starts a server and sets it, or point it at yours"
            )
        });
        let schema = format!("test_{}", uuid::Uuid::now_v7().simple());
        sqlx::any::install_default_drivers();
        let mut connection = sqlx::AnyConnection::connect(&base)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to {TEST_DATABASE_URL}: {error}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut connection)
            .await
            .expect("a test schema can be created");
        connection.close().await.ok();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
        TestDatabase { url, _dir: None }
    }
}
