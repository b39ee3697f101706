//! A run's lease on its task: named so that no other run anywhere shares the name, renewed a
//! third of its length before it runs out, and given up (the run stopped) when it is lost or
//! about to run out, since another process may then take the task.

use std::time::{Duration, Instant};

use deft_core::{TaskId, Timestamp};
use deft_store::Store;
use tokio_util::sync::CancellationToken;

/// A name no other run has, on this machine or another: `ROLE-PID-N-RANDOM`. The pid alone
/// repeats across containers (often 1), and two runs sharing a name could renew each other's
/// leases.
pub(crate) fn worker_name(role: &str, n: u64) -> String {
    format!(
        "{role}-{}-{n}-{}",
        std::process::id(),
        // The random tail of a v7 UUID (its head is the time).
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
}

/// When a lease taken or renewed now runs out.
pub(crate) fn lease_expiry(lease: Duration) -> Timestamp {
    Timestamp::now().plus_millis(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
}

/// Renews the lease a third of its length before it runs out; a lease lost (taken back after
/// a stall) stops the run, since another worker may now have the task.
pub(crate) async fn keep_lease(
    store: Store,
    task: TaskId,
    worker: String,
    lease: Duration,
    cancel: CancellationToken,
) {
    let third = lease / 3;
    // The lease is good until this instant; the first renewal is a third of a lease after the
    // claim, which gave a whole lease.
    let mut valid_until = Instant::now() + lease;
    loop {
        tokio::time::sleep(third).await;
        let asked = Instant::now();
        match store.renew_lease(&task, &worker, lease_expiry(lease)).await {
            Ok(true) => valid_until = asked + lease,
            Ok(false) => {
                // The task finished, waits for its owner, or was taken back: stop either way.
                cancel.cancel();
                return;
            }
            Err(error) => {
                tracing::warn!(task.id = %task, error = %error, "cannot renew the lease");
                // Another worker may take the task once the lease runs out: stop before then
                // rather than run it twice.
                if Instant::now() + third >= valid_until {
                    tracing::error!(task.id = %task, "the lease is about to run out; stopping the run");
                    cancel.cancel();
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::worker_name;

    #[test]
    fn a_run_is_named_for_its_role_and_process_and_no_two_names_meet() {
        let first = worker_name("worker", 7);
        let parts: Vec<&str> = first.split('-').collect();
        assert_eq!(parts[0], "worker");
        // Operators (and the workers' tests) read the process back from the name.
        assert_eq!(parts[1], std::process::id().to_string());
        assert_eq!(parts[2], "7");
        assert_ne!(first, worker_name("worker", 7), "the random tail differs");
    }
}
