//! Group commit of the jobs that end without a model (skipped for too little
//! data, or failed). Each such end waits for a WAL flush when it commits, and
//! on a large cycle of mostly skipped jobs those flushes, one per job, set
//! the pace. So a process's ends go through one committer task: it takes
//! every end already waiting, waits at most a short window for the other
//! jobs in flight to end too, and commits the group in one statement
//! ([`jobs::finish_many_without_model`]): one flush for the group.
//!
//! Nothing about a single job changes: its transition is still guarded by
//! its attempt, its cycle counters change in the statement that ends it,
//! and its handler acknowledges the delivery in Redis only after the group
//! committed. A process that dies before the commit leaves its jobs running;
//! their leases expire, they are delivered again, and the attempt guard lets
//! exactly one run record each outcome.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use trainyard_shared::jobs::{self, EndWithoutModel};

/// At most this many ends share one commit.
const MAX_GROUP: usize = 64;

/// Why an end was not recorded; the caller retries it like any database
/// failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EndError {
    #[error(transparent)]
    Database(Arc<sqlx::Error>),
    /// The committer task is gone (only while the process exits).
    #[error("the process is stopping: job ends are no longer recorded")]
    Closed,
}

struct Pending {
    end: EndWithoutModel,
    reply: oneshot::Sender<Result<bool, EndError>>,
}

/// The handle jobs end through; cheap to share.
#[derive(Debug, Clone)]
pub struct JobEnds {
    tx: mpsc::UnboundedSender<Pending>,
}

impl JobEnds {
    /// Starts the committer. `in_flight` counts this process's jobs between
    /// claim and end: once every one of them is waiting in a group, nothing
    /// else can join it and the group commits without waiting out `window`.
    pub fn start(pool: PgPool, in_flight: Arc<AtomicUsize>, window: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(committer(pool, rx, in_flight, window));
        Self { tx }
    }

    /// Ends the attempt as `failed` or `skipped` and counts it, in the next
    /// group commit. `Ok(false)`: the attempt no longer owned the job.
    pub async fn finish(&self, end: EndWithoutModel) -> Result<bool, EndError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { end, reply })
            .map_err(|_| EndError::Closed)?;
        answer.await.map_err(|_| EndError::Closed)?
    }
}

async fn committer(
    pool: PgPool,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    in_flight: Arc<AtomicUsize>,
    window: Duration,
) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let deadline = tokio::time::Instant::now() + window;
        while group.len() < MAX_GROUP && group.len() < in_flight.load(Ordering::SeqCst) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(p)) => group.push(p),
                Ok(None) | Err(_) => break,
            }
        }
        commit(&pool, group).await;
    }
}

/// Commits a group and answers each of its jobs. A group the server refuses
/// (a statement error, not an unreachable server) is retried one job at a
/// time, so one bad end cannot hold back the others.
async fn commit(pool: &PgPool, group: Vec<Pending>) {
    let ends: Vec<EndWithoutModel> = group.iter().map(|p| p.end.clone()).collect();
    let result = match ends.as_slice() {
        [one] => jobs::finish_without_model(pool, &one.job, one.status, &one.reason)
            .await
            .map(|owned| vec![owned]),
        many => jobs::finish_many_without_model(pool, many).await,
    };
    match result {
        Ok(owned) => {
            for (p, owned) in group.into_iter().zip(owned) {
                let _ = p.reply.send(Ok(owned));
            }
        }
        Err(sqlx::Error::Database(e)) if group.len() > 1 => {
            tracing::warn!(error = %e, jobs = group.len(),
                "ending a group of jobs failed; ending them one at a time");
            for p in group {
                let e = &p.end;
                let one = jobs::finish_without_model(pool, &e.job, e.status, &e.reason)
                    .await
                    .map_err(|e| EndError::Database(Arc::new(e)));
                let _ = p.reply.send(one);
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for p in group {
                let _ = p.reply.send(Err(EndError::Database(e.clone())));
            }
        }
    }
}
