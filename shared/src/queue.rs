//! The Redis transport: the job payload, the queue's name and settings, and
//! pushing jobs. PostgreSQL stays the source of truth: a payload carries only
//! ids, and the worker re-reads the job row before doing anything.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis::prelude::{PollSnapshot, PollStrategy, TaskBuilder, TaskId};
use apalis_redis::{Config as RedisQueueConfig, ConnectionManager, RedisStorage};
use serde::{Deserialize, Serialize};

use crate::domain::{CycleId, JobId, ModelType, OrgId};

/// Default Redis key prefix of the training queue. Set explicitly so that
/// renaming the payload type never moves the queue.
pub const DEFAULT_QUEUE: &str = "trainyard:training";

/// What travels through Redis: one training job, by id. The other fields are
/// for logs; the worker trusts the PostgreSQL row, not them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainJob {
    pub job_id: JobId,
    pub cycle_id: CycleId,
    pub org_id: OrgId,
    pub model_type: ModelType,
}

/// Errors talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("REDIS_URL is not a valid Redis URL")]
    BadUrl(#[source] redis::RedisError),
    #[error("could not connect to Redis")]
    Connect(#[source] redis::RedisError),
    #[error("pushing jobs to Redis failed")]
    Push(#[source] apalis_redis::Error),
    #[error("Redis command failed")]
    Command(#[from] redis::RedisError),
}

/// Connects with a response timeout longer than apalis' 500 ms default, so
/// one slow reply does not break the pool.
pub async fn connect(
    url: &str,
    response_timeout: Duration,
) -> Result<ConnectionManager, QueueError> {
    let client = redis::Client::open(url).map_err(QueueError::BadUrl)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(response_timeout))
        .set_number_of_retries(3);
    client
        .get_connection_manager_with_config(config)
        .await
        .map_err(QueueError::Connect)
}

/// Queue settings shared by producers and consumers.
pub fn queue_config(queue: &str) -> RedisQueueConfig {
    RedisQueueConfig::default().queue(queue)
}

/// The storage a producer pushes through.
pub fn storage(conn: ConnectionManager, config: RedisQueueConfig) -> RedisStorage<TrainJob> {
    RedisStorage::new(conn).with_config(config)
}

/// The Redis task id of one delivery of a job. The same `(job, push_seq)`
/// always maps to the same id, and the storage stores a task's data with
/// HSETNX, so re-pushing a delivery that Redis still holds is a no-op while a
/// delivery that Redis lost is restored. A job that needs a fresh delivery
/// (handed back, or its delivery finished without a terminal row) bumps
/// `push_seq`.
pub fn task_id(job_id: JobId, push_seq: i32) -> ulid::Ulid {
    ulid::Ulid::from(job_id.0.as_u128() ^ (push_seq as u32 as u128))
}

/// Pushes deliveries in one round trip. `max_attempts` is set high because
/// attempts are counted and capped in PostgreSQL, not by the storage.
pub async fn push_jobs(
    conn: &mut ConnectionManager,
    config: &RedisQueueConfig,
    jobs: &[(TrainJob, i32)],
) -> Result<(), QueueError> {
    for chunk in jobs.chunks(500) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|(job, seq)| {
                let bytes = serde_json::to_vec(job).expect("a TrainJob always serializes");
                TaskBuilder::new(bytes)
                    .task_id(TaskId::from(task_id(job.job_id, *seq)))
                    .max_attempts(25)
                    .build()
            })
            .collect();
        apalis_redis::queries::push_tasks(conn, config, &tasks)
            .await
            .map_err(QueueError::Push)?;
    }
    Ok(())
}

/// Whether Redis still holds the data of these deliveries (one round trip).
pub async fn deliveries_present(
    conn: &mut ConnectionManager,
    config: &RedisQueueConfig,
    deliveries: &[(JobId, i32)],
) -> Result<Vec<bool>, QueueError> {
    if deliveries.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for (job, seq) in deliveries {
        pipe.cmd("HEXISTS")
            .arg(config.job_data_hash())
            .arg(task_id(*job, *seq).to_string());
    }
    Ok(pipe.query_async(conn).await?)
}

/// Deletes finished task data (done, failed, killed) that apalis never removes.
pub async fn vacuum(
    conn: &mut ConnectionManager,
    config: &RedisQueueConfig,
) -> Result<usize, QueueError> {
    use apalis_core::backend::Vacuum;
    let mut storage = storage(conn.clone(), config.clone());
    storage.vacuum().await.map_err(QueueError::Push)
}

/// A poll timer that re-arms itself every time it fires. apalis' interval
/// strategy replaces its timer without polling it, so no waker is registered
/// and an idle worker can sleep until its next heartbeat; this one polls the
/// fresh timer at once.
#[derive(Debug)]
pub struct RearmingInterval {
    every: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl RearmingInterval {
    pub fn new(every: Duration) -> Self {
        Self { every, sleep: None }
    }
}

impl PollStrategy for RearmingInterval {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _snapshot: &PollSnapshot) -> Poll<Option<()>> {
        let every = self.every;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let mut next = Box::pin(tokio::time::sleep(every));
                // Registers the waker for the next tick.
                let _ = next.as_mut().poll(cx);
                self.sleep = Some(next);
                Poll::Ready(Some(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_id_is_stable_and_changes_with_the_push_sequence() {
        let job = JobId::new_random();
        assert_eq!(task_id(job, 0), task_id(job, 0));
        assert_ne!(task_id(job, 0), task_id(job, 1));
        assert_eq!(task_id(job, 0).0, job.0.as_u128());
    }
}
