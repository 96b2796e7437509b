//! The SQL backends a store contract test runs against: SQLite in a scratch directory and a
//! fresh PostgreSQL database. `contract_tests!` turns `async fn name(backend: Backend)` cases into
//! `sqlite::name` and `postgres::name` tests.

#![allow(dead_code)]

use baton::store::SqlStore;
use sqlx::AnyPool;

use super::pg::TestDatabase;

/// Where a test's data lives; cleaned up on drop.
pub enum Backend {
    Sqlite {
        url: String,
        _directory: tempfile::TempDir,
    },
    Postgres {
        database: TestDatabase,
    },
}

impl Backend {
    pub async fn sqlite() -> Backend {
        let directory = tempfile::tempdir().expect("temporary directory");
        // A missing parent directory: the store must create it.
        let url = format!(
            "sqlite://{}",
            directory.path().join("data/baton.db").display()
        );
        Backend::Sqlite {
            url,
            _directory: directory,
        }
    }

    pub async fn postgres() -> Backend {
        Backend::Postgres {
            database: TestDatabase::create().await,
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Backend::Sqlite { url, .. } => url,
            Backend::Postgres { database } => database.url(),
        }
    }

    pub async fn open(&self) -> SqlStore {
        SqlStore::connect(self.url())
            .await
            .unwrap_or_else(|error| panic!("connecting to {}: {error}", self.url()))
    }

    /// A plain connection pool to the same database, for what the store API cannot do on
    /// purpose: counting raw rows and planting corrupt data.
    pub async fn raw(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPool::connect(self.url())
            .await
            .unwrap_or_else(|error| panic!("raw connection to {}: {error}", self.url()))
    }
}

/// Instantiates each `async fn case(backend: Backend)` once per backend.
#[macro_export]
macro_rules! contract_tests {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::common::backends::Backend::sqlite().await).await;
                }
            )+
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::common::backends::Backend::postgres().await).await;
                }
            )+
        }
    };
}
