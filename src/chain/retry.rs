//! Retries by error class (transient and deployment forever, dependency
//! and data a few times), and the one capped exponential backoff of every retry loop:
//! chains, dead-letter publishing, the recovery listener, and reading the
//! ledger on assignment.

use super::{ChainError, ErrorClass};
use crate::config::Retries;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Waits `first` (at most `max`), then twice as long each time, up to `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            next: first.min(max),
            max,
        }
    }

    /// The delay before the next try; the one after is twice as long.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Sleeps the next delay; false when `stop` fired first.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// Sleeps the next delay on a thread outside the runtime (the poll thread).
    pub fn wait_blocking(&mut self) {
        std::thread::sleep(self.next_delay());
    }
}

/// Woken when the database answers again while chains wait on a transient
/// error: they run at once instead of sleeping out a backoff that may have
/// grown to `max_backoff` during a long outage. The dispatcher's database
/// watch notifies it.
pub static DATABASE_BACK: std::sync::LazyLock<tokio::sync::Notify> =
    std::sync::LazyLock::new(tokio::sync::Notify::new);

/// Why [`retrying`] gave up.
#[derive(Debug)]
pub enum Failure {
    /// The error's class is out of attempts; `attempts` runs were made.
    GaveUp { error: ChainError, attempts: u32 },
    /// Shutdown or revocation came while waiting to retry; nothing was applied.
    Interrupted,
}

/// Calls `attempt` until it succeeds, its error's class (per `retries`) is
/// out of attempts, or `stop` fires while waiting. Transient and deployment
/// errors are retried forever (with the transient backoff). Each class backs off on its own, doubling up to its cap.
pub async fn retrying<T, F, Fut>(
    retries: &Retries,
    stop: &CancellationToken,
    on_retry: impl Fn(&ChainError, u32),
    mut attempt: F,
) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ChainError>>,
{
    let mut tries = 0u32;
    // The backoff of the class that failed last; a new class starts afresh.
    let mut backoff: Option<(ErrorClass, Backoff)> = None;
    loop {
        tries += 1;
        let err = match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let policy = match err.class {
            ErrorClass::Transient | ErrorClass::Deployment => &retries.transient,
            ErrorClass::DependencyMissing => &retries.dependency,
            ErrorClass::Data => &retries.data,
        };
        if !err.class.retried_forever() && tries >= policy.attempts {
            return Err(Failure::GaveUp {
                error: err,
                attempts: tries,
            });
        }
        if backoff
            .as_ref()
            .is_none_or(|(class, _)| *class != err.class)
        {
            backoff = Some((
                err.class,
                Backoff::new(policy.backoff.0, policy.max_backoff.0),
            ));
        }
        let delay = backoff.as_mut().expect("set above").1.next_delay();
        tracing::warn!(
            attempt = tries,
            retry_in_ms = delay.as_millis() as u64,
            class = err.class.as_str(),
            "chain failed, retrying: {err}"
        );
        on_retry(&err, tries);
        let transient = err.class == ErrorClass::Transient;
        tokio::select! {
            _ = stop.cancelled() => return Err(Failure::Interrupted),
            _ = tokio::time::sleep(delay) => {}
            _ = DATABASE_BACK.notified(), if transient => {
                // The next failure starts its backoff afresh.
                backoff = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_transient_retry_runs_at_once_when_the_database_is_back() {
        let mut retries = Retries::default();
        retries.transient.backoff = crate::config::Dur::ms(600_000);
        retries.transient.max_backoff = crate::config::Dur::ms(600_000);
        let calls = std::sync::atomic::AtomicU32::new(0);
        let stop = CancellationToken::new();
        let run = retrying(
            &retries,
            &stop,
            |_, _| {},
            || {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n == 0 {
                        Err(ChainError {
                            class: ErrorClass::Transient,
                            sqlstate: Some("08006".into()),
                            step: None,
                            message: "connection lost".into(),
                            detail: None,
                        })
                    } else {
                        Ok(n)
                    }
                }
            },
        );
        let notify = async {
            // Until the retry waits (its backoff is ten minutes).
            while calls.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            DATABASE_BACK.notify_waiters();
        };
        let (ran, ()) =
            tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(run, notify) })
                .await
                .expect("woken, not sleeping out ten minutes");
        assert_eq!(ran.ok(), Some(1));
    }

    #[test]
    fn doubles_up_to_the_cap() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(delays, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        assert_eq!(Backoff::new(ms(900), ms(500)).next_delay(), ms(500));
    }
}
