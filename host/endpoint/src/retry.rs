//! Running an operation again after transient failures.

use std::future::Future;

use crate::config::RetryPolicy;
use crate::error::Result;

/// Runs `op` until it succeeds, fails permanently, or `policy.max_attempts` is spent,
/// sleeping an exponentially growing, jittered delay between attempts.
pub async fn with_retry<T, F, Fut>(policy: &RetryPolicy, what: &str, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && attempt < policy.max_attempts.max(1) => {
                let delay = policy.backoff(attempt);
                tracing::warn!(%what, attempt, ?delay, error = %e, "transient failure, retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
