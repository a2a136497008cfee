//! Passwords in DATABASE_URL and REDIS_URLS never reach a message: start-up errors included.

use fencelock_app::configuration::Settings;
use fencelock_app::startup::Application;
use fencelock_testkit::free_port;
use std::collections::HashMap;

async fn start_up_error(vars: &[(&str, String)]) -> String {
    let vars: HashMap<&str, String> = vars.iter().cloned().collect();
    let settings = Settings::from_lookup(|name| vars.get(name).cloned()).expect("valid settings");
    let err = Application::build(settings)
        .await
        .expect_err("the instance cannot start");
    format!("{err} / {err:?}")
}

#[tokio::test]
async fn start_up_errors_do_not_show_passwords() {
    // PostgreSQL refuses: the message names the URL, without its password.
    let database_down = start_up_error(&[
        (
            "DATABASE_URL",
            format!("postgres://app:s3cret@127.0.0.1:{}/app", free_port()),
        ),
        ("BIND", "127.0.0.1:0".into()),
    ])
    .await;
    assert!(!database_down.contains("s3cret"), "{database_down}");
    assert!(database_down.contains("app:***@"), "{database_down}");

    // A Redis URL redis-rs cannot parse: the lock configuration error.
    let database = crate::helpers::postgres();
    database.create_database("secrets");
    let bad_redis = start_up_error(&[
        ("DATABASE_URL", database.url("secrets")),
        ("REDIS_URLS", "redis://:s3cret@127.0.0.1:notaport/".into()),
        ("BIND", "127.0.0.1:0".into()),
    ])
    .await;
    assert!(!bad_redis.contains("s3cret"), "{bad_redis}");
    assert!(bad_redis.contains("REDIS_URLS"), "{bad_redis}");
}
