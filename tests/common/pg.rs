//! Throwaway PostgreSQL databases for tests.
//!
//! Every test gets its own database (`baton_test_<random>`) on the server named by
//! `BATON_TEST_POSTGRES_URL` (default: `postgres://postgres@127.0.0.1:5432/postgres`, trust auth),
//! and the database is dropped when the [`TestDatabase`] guard is dropped, also when the test panics.
//! A server that cannot be reached fails the test: PostgreSQL support is not optional.

// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]

use sqlx::{Connection, Executor, PgConnection};

pub const ADMIN_URL_VARIABLE: &str = "BATON_TEST_POSTGRES_URL";
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The URL of a database that may create and drop databases.
pub fn admin_url() -> String {
    std::env::var(ADMIN_URL_VARIABLE).unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string())
}

/// `url` with its database name replaced by `database` (query parameters are kept).
pub fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |scheme_end| scheme_end + 3);
    let server = match base[authority_start..].find('/') {
        Some(path_start) => &base[..authority_start + path_start],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

/// A freshly created, empty database; dropped (with any connections still open to it) when this
/// guard goes out of scope.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Create a new database. Panics with instructions when PostgreSQL is unreachable.
    pub async fn create() -> TestDatabase {
        let admin_url = admin_url();
        let name = format!("baton_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = connect_admin(&admin_url).await;
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|error| panic!("could not create test database {name}: {error}"));
        // Best effort: an error closing the admin connection does not affect the new database.
        let _ = admin.close().await;
        let url = url_with_database(&admin_url, &name);
        TestDatabase {
            admin_url,
            name,
            url,
        }
    }

    /// The URL to connect to this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop cannot be async, and the test's runtime may be the current-thread kind that must not
        // be blocked on from inside; a separate thread with its own runtime does the dropping and
        // this one waits for it, so the database is gone before the test finishes.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropper = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| format!("no runtime: {error}"))?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .map_err(|error| format!("cannot connect: {error}"))?;
                // FORCE ends the connections a store under test may still hold.
                admin
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                    .map_err(|error| format!("DROP DATABASE failed: {error}"))?;
                let _ = admin.close().await;
                Ok(())
            })
        });
        let outcome = dropper
            .join()
            .unwrap_or_else(|_| Err("the dropping thread panicked".to_string()));
        if let Err(reason) = outcome {
            // Panicking in Drop would abort a test that is already unwinding; leaking one test
            // database is the lesser harm, so say which one.
            eprintln!(
                "warning: could not drop test database {}: {reason}",
                self.name
            );
        }
    }
}

async fn connect_admin(admin_url: &str) -> PgConnection {
    PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|error| {
            panic!(
            "PostgreSQL is required by these tests and is not reachable at {admin_url}: {error}\n\
             Start PostgreSQL on 127.0.0.1:5432 with trust authentication for user `postgres`, \
             or point {ADMIN_URL_VARIABLE} at a server where that user may create databases."
        )
        })
}
