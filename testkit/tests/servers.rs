//! The harness itself: servers start, answer, restart, and leave nothing behind.

use fencelock_testkit::{PostgresServer, RedisServer};
use std::net::TcpStream;

#[test]
fn redis_starts_restarts_and_stops_with_its_owner() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    redis.kill();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    redis.restart();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(redis);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server outlived its owner"
    );
}

#[test]
fn postgres_starts_and_answers_sql() {
    let postgres = PostgresServer::start();
    postgres.create_database("harness_check");
    assert_eq!(postgres.psql("harness_check", "SELECT 40 + 2"), "42");
    let port = postgres.port();
    drop(postgres);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server outlived its owner"
    );
}
