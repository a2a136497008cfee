// Generics, a where clause, and `?` in the body converting through the function's error type.
use fencelock::{distributed_lock, LockError, Locker};
use std::fmt::Display;

#[derive(Debug)]
enum JobError {
    Lock(LockError),
    Parse(std::num::ParseIntError),
}

impl From<LockError> for JobError {
    fn from(error: LockError) -> Self {
        JobError::Lock(error)
    }
}

impl From<std::num::ParseIntError> for JobError {
    fn from(error: std::num::ParseIntError) -> Self {
        JobError::Parse(error)
    }
}

#[distributed_lock(resource = "parse:{key}", locker = locker)]
async fn parse_under_lock<K>(locker: &Locker, key: K, text: &str) -> Result<i64, JobError>
where
    K: Display + Send + Sync,
{
    let value: i64 = text.parse()?;
    if value < 0 {
        return Ok(0);
    }
    Ok(value)
}

fn main() {
    let _ = parse_under_lock::<u8>;
}
