//! The Redis transport: the job payload, the queue's name and settings, and
//! pushing jobs. PostgreSQL stays the source of truth: a payload carries only
//! ids, and the worker re-reads the job row before doing anything.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
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
///
/// Tasks are neither locked nor have their results persisted by apalis:
/// locking costs an `LREM` over the active list per task and races our own
/// acknowledgement, and persisted results would be a second, unbounded
/// history. A worker acknowledges every delivery itself ([`ack`]) once
/// PostgreSQL holds its outcome. Nobody listens to apalis' pub/sub events.
pub fn queue_config(queue: &str) -> RedisQueueConfig {
    RedisQueueConfig::default()
        .queue(queue)
        .lock_tasks(false)
        .persist_results(false)
        .emit_events(false)
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
    if !jobs.is_empty() {
        announce(conn, config).await;
    }
    Ok(())
}

/// What a worker receives: a training job, or bytes that are not one. The
/// codec never fails, so a message that is not a job reaches the handler,
/// which logs it once and acknowledges it, instead of killing the consumer
/// stream (apalis ends the worker on a decoding error and the message would
/// come back forever).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Job(TrainJob),
    Undecodable {
        /// The first bytes, lossily decoded and with control characters escaped.
        preview: String,
        error: String,
    },
}

/// JSON for [`TrainJob`] that decodes anything: see [`Delivery`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DeliveryCodec;

impl apalis_core::backend::codec::Codec<Delivery> for DeliveryCodec {
    type Error = std::convert::Infallible;
    type Compact = Vec<u8>;

    fn encode(&self, val: &Delivery) -> Result<Vec<u8>, Self::Error> {
        Ok(match val {
            Delivery::Job(job) => serde_json::to_vec(job).expect("a TrainJob always serializes"),
            Delivery::Undecodable { preview, .. } => preview.as_bytes().to_vec(),
        })
    }

    fn decode(&self, bytes: &Vec<u8>) -> Result<Delivery, Self::Error> {
        Ok(match serde_json::from_slice::<TrainJob>(bytes) {
            Ok(job) => Delivery::Job(job),
            Err(e) => Delivery::Undecodable {
                preview: preview(bytes),
                error: e.to_string(),
            },
        })
    }
}

/// At most 200 characters of a message, safe to print on a terminal or log line.
fn preview(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        .chars()
        .flat_map(char::escape_default)
        .collect()
}

/// Acknowledges a finished delivery: removes it from the worker's in-flight
/// set and deletes its payload and metadata, atomically (a task id left in an
/// in-flight set without its payload would break apalis' fetch for whoever
/// re-queues it). Called once PostgreSQL holds the delivery's outcome, or
/// once the delivery is known to be useless (duplicate, unknown, undecodable).
pub async fn ack(
    conn: &mut ConnectionManager,
    config: &RedisQueueConfig,
    worker: &str,
    task: &str,
) -> Result<(), QueueError> {
    static ACK: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
        redis::Script::new(
            r"
            redis.call('srem', KEYS[1], ARGV[1])
            redis.call('hdel', KEYS[2], ARGV[1])
            redis.call('del', KEYS[3] .. ':' .. ARGV[1])
            return 1",
        )
    });
    ACK.key(inflight_set(config, worker))
        .key(config.job_data_hash())
        .key(config.job_meta_hash())
        .arg(task)
        .invoke_async::<i64>(conn)
        .await?;
    Ok(())
}

/// Keeps a copy of an undecodable message (capped list of the last 100),
/// so an operator can see what was pushed.
pub async fn dead_letter(
    conn: &mut ConnectionManager,
    config: &RedisQueueConfig,
    entry: &str,
) -> Result<(), QueueError> {
    let key = dead_letter_list(config);
    redis::pipe()
        .lpush(&key, entry)
        .ignore()
        .ltrim(&key, 0, 99)
        .ignore()
        .query_async::<()>(conn)
        .await?;
    Ok(())
}

/// Where a stopping worker notes that it could not hand a job back (see
/// `jobs::note_hand_back`). Every Redis key this crate names, apalis' and
/// ours, is built in this module.
pub fn hand_back_key(config: &RedisQueueConfig, job: JobId) -> String {
    format!("{}:handed-back:{job}", config.queue.as_ref())
}

/// The Redis list holding the last undecodable messages.
pub fn dead_letter_list(config: &RedisQueueConfig) -> String {
    format!("{}:dead-letters", config.queue.as_ref())
}

fn inflight_set(config: &RedisQueueConfig, worker: &str) -> String {
    format!("{}:{worker}", config.inflight_jobs_set())
}

/// Deregisters a worker that stops: whatever is still in its in-flight set
/// (fetched but never handled) goes back to the front of the queue, and the
/// worker leaves the workers set, so nobody re-queues its history later.
/// Returns how many deliveries went back.
pub async fn deregister(
    conn: &mut ConnectionManager,
    config: &RedisQueueConfig,
    worker: &str,
) -> Result<usize, QueueError> {
    static DEREGISTER: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
        redis::Script::new(
            r"
            local ids = redis.call('smembers', KEYS[1])
            for _, id in ipairs(ids) do
                redis.call('lpush', KEYS[2], id)
            end
            if #ids > 0 then
                redis.call('del', KEYS[4])
                redis.call('lpush', KEYS[4], 1)
            end
            redis.call('del', KEYS[1])
            redis.call('zrem', KEYS[3], ARGV[1])
            redis.call('del', KEYS[5])
            return #ids",
        )
    });
    let n: usize = DEREGISTER
        .key(inflight_set(config, worker))
        .key(config.active_jobs_list())
        .key(config.workers_set())
        .key(config.signal_list())
        .key(format!(
            "{}:workers:metadata:{worker}",
            config.queue.as_ref()
        ))
        .arg(worker)
        .invoke_async(conn)
        .await?;
    Ok(n)
}

/// What [`reconcile`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// For each asked delivery: whether it is on its way to a worker
    /// (queued, scheduled, or in a registered worker's in-flight set).
    pub live: Vec<bool>,
    /// Payloads (and their metadata) that no queue, schedule or in-flight
    /// set refers to any more, deleted.
    pub garbage: usize,
    /// Queue entries whose payload is gone, removed (apalis' fetch fails on them).
    pub dangling: usize,
}

/// One atomic look at the queue's state in Redis: which of `deliveries` are
/// live, and the removal of everything that can never be delivered again.
/// Everything it touches is bounded by the window: the queue, the schedule
/// and the in-flight sets of registered workers.
pub async fn reconcile(
    conn: &mut ConnectionManager,
    config: &RedisQueueConfig,
    deliveries: &[(JobId, i32)],
) -> Result<Reconciled, QueueError> {
    static RECONCILE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
        redis::Script::new(
            r"
            local data, active, scheduled = KEYS[1], KEYS[2], KEYS[3]
            local live = {}
            local dangling = 0
            for _, id in ipairs(redis.call('lrange', active, 0, -1)) do
                if redis.call('hexists', data, id) == 1 then
                    live[id] = true
                else
                    redis.call('lrem', active, 0, id)
                    dangling = dangling + 1
                end
            end
            for _, id in ipairs(redis.call('zrange', scheduled, 0, -1)) do
                if redis.call('hexists', data, id) == 1 then
                    live[id] = true
                else
                    redis.call('zrem', scheduled, id)
                    dangling = dangling + 1
                end
            end
            for _, w in ipairs(redis.call('zrange', KEYS[4], 0, -1)) do
                for _, id in ipairs(redis.call('smembers', KEYS[5] .. ':' .. w)) do
                    live[id] = true
                end
            end
            local garbage = 0
            for _, id in ipairs(redis.call('hkeys', data)) do
                if not live[id] then
                    redis.call('hdel', data, id)
                    redis.call('del', KEYS[6] .. ':' .. id)
                    garbage = garbage + 1
                end
            end
            local out = {garbage, dangling}
            for i = 1, #ARGV do
                out[i + 2] = live[ARGV[i]] and 1 or 0
            end
            return out",
        )
    });
    let mut script = RECONCILE.key(config.job_data_hash());
    script
        .key(config.active_jobs_list())
        .key(config.scheduled_jobs_set())
        .key(config.workers_set())
        .key(config.inflight_jobs_set())
        .key(config.job_meta_hash());
    for (job, seq) in deliveries {
        script.arg(task_id(*job, *seq).to_string());
    }
    let out: Vec<i64> = script.invoke_async(conn).await?;
    Ok(Reconciled {
        garbage: out.first().copied().unwrap_or(0) as usize,
        dangling: out.get(1).copied().unwrap_or(0) as usize,
        live: out.iter().skip(2).map(|&b| b == 1).collect(),
    })
}

/// What Redis holds of the queue at one instant, read-only (unlike
/// [`reconcile`], nothing is removed): the ops API compares it with what
/// PostgreSQL says is queued or running.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RedisDeliveries {
    /// Task ids waiting for a worker (queued or scheduled) whose payload exists.
    pub waiting: std::collections::HashSet<String>,
    /// Task ids in a registered worker's in-flight set.
    pub in_flight: std::collections::HashSet<String>,
    /// Waiting entries whose payload is gone (apalis' fetch fails on them;
    /// the sweeper removes them).
    pub dangling: usize,
}

impl RedisDeliveries {
    /// Whether the delivery `(job, push_seq)` is on its way to or at a worker.
    pub fn holds(&self, job: JobId, push_seq: i32) -> bool {
        let id = task_id(job, push_seq).to_string();
        self.waiting.contains(&id) || self.in_flight.contains(&id)
    }
}

/// One atomic, read-only look at every delivery Redis holds: the queue, the
/// schedule and the in-flight sets of registered workers (all bounded by
/// the window).
pub async fn deliveries(
    conn: &mut ConnectionManager,
    config: &RedisQueueConfig,
) -> Result<RedisDeliveries, QueueError> {
    static DELIVERIES: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
        redis::Script::new(
            r"
            local data = KEYS[1]
            local waiting, in_flight = {}, {}
            local dangling = 0
            local function wait(id)
                if redis.call('hexists', data, id) == 1 then
                    waiting[#waiting + 1] = id
                else
                    dangling = dangling + 1
                end
            end
            for _, id in ipairs(redis.call('lrange', KEYS[2], 0, -1)) do wait(id) end
            for _, id in ipairs(redis.call('zrange', KEYS[3], 0, -1)) do wait(id) end
            for _, w in ipairs(redis.call('zrange', KEYS[4], 0, -1)) do
                for _, id in ipairs(redis.call('smembers', KEYS[5] .. ':' .. w)) do
                    in_flight[#in_flight + 1] = id
                end
            end
            return {dangling, waiting, in_flight}",
        )
    });
    let (dangling, waiting, in_flight): (usize, Vec<String>, Vec<String>) = DELIVERIES
        .key(config.job_data_hash())
        .key(config.active_jobs_list())
        .key(config.scheduled_jobs_set())
        .key(config.workers_set())
        .key(config.inflight_jobs_set())
        .invoke_async(conn)
        .await?;
    Ok(RedisDeliveries {
        waiting: waiting.into_iter().collect(),
        in_flight: in_flight.into_iter().collect(),
        dangling,
    })
}

/// Removes one waiting delivery from the queue and deletes its payload, as
/// if Redis had lost it (tests of the drift check and the sweeper).
pub async fn forget_delivery(
    conn: &mut ConnectionManager,
    config: &RedisQueueConfig,
    job: JobId,
    push_seq: i32,
) -> Result<(), QueueError> {
    let id = task_id(job, push_seq).to_string();
    redis::pipe()
        .atomic()
        .lrem(config.active_jobs_list(), 0, &id)
        .ignore()
        .zrem(config.scheduled_jobs_set(), &id)
        .ignore()
        .hdel(config.job_data_hash(), &id)
        .ignore()
        .del(format!("{}:{id}", config.job_meta_hash()))
        .ignore()
        .query_async::<()>(conn)
        .await?;
    Ok(())
}

/// Deletes the metadata apalis keeps for workers no longer registered
/// (crashed processes, replaced consumer generations): apalis writes one
/// hash per worker name and never removes it. Names are unique per process
/// and generation, so a name that left the workers set never comes back.
/// Returns how many were deleted.
pub async fn forget_departed_workers(
    conn: &mut ConnectionManager,
    config: &RedisQueueConfig,
) -> Result<usize, QueueError> {
    let prefix = format!("{}:workers:metadata:", config.queue.as_ref());
    let mut cursor: u64 = 0;
    let mut gone = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.zscore(config.workers_set(), &key[prefix.len()..]);
            }
            let scores: Vec<Option<f64>> = pipe.query_async(conn).await?;
            gone.extend(
                keys.into_iter()
                    .zip(scores)
                    .filter(|(_, s)| s.is_none())
                    .map(|(k, _)| k),
            );
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    if !gone.is_empty() {
        redis::cmd("DEL").arg(&gone).query_async::<()>(conn).await?;
    }
    Ok(gone.len())
}

/// Every Redis key of a queue, for tests and diagnostics (SCAN, not KEYS).
pub async fn key_count(
    conn: &mut ConnectionManager,
    config: &RedisQueueConfig,
) -> Result<usize, QueueError> {
    let pattern = format!("{}*", config.queue.as_ref());
    let mut cursor: u64 = 0;
    let mut n = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        n += keys.len();
        if next == 0 {
            return Ok(n);
        }
        cursor = next;
    }
}

/// The channel a push announces itself on, so idle workers fetch at once
/// instead of at their next poll.
pub fn wake_channel(config: &RedisQueueConfig) -> String {
    format!("{}:wake", config.queue.as_ref())
}

async fn announce(conn: &mut ConnectionManager, config: &RedisQueueConfig) {
    // Best effort: a lost wake-up costs one poll interval.
    let _ = redis::cmd("PUBLISH")
        .arg(wake_channel(config))
        .arg(1)
        .query_async::<i64>(conn)
        .await;
}

/// Wake-ups for a worker's poll strategy: a listener bumps the count when a
/// push is announced, and wakes whichever consumer generation is waiting.
#[derive(Debug, Default)]
pub struct Wakeups {
    seq: AtomicU64,
    waker: Mutex<Option<Waker>>,
}

impl Wakeups {
    pub fn wake(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn register(&self, cx: &Context<'_>) -> u64 {
        *self.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        self.seq.load(Ordering::SeqCst)
    }
}

/// Listens for pushes on the queue's wake channel (its own connection; it
/// reconnects after errors) until the task is aborted.
pub fn listen_for_pushes(
    url: String,
    config: &RedisQueueConfig,
    wakeups: Arc<Wakeups>,
) -> tokio::task::JoinHandle<()> {
    use futures::StreamExt as _;
    let channel = wake_channel(config);
    tokio::spawn(async move {
        loop {
            let subscribed = async {
                let client = redis::Client::open(url.as_str())?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            }
            .await;
            match subscribed {
                Ok(pubsub) => {
                    // Pushes made while we were not listening.
                    wakeups.wake();
                    let mut messages = pubsub.into_on_message();
                    while messages.next().await.is_some() {
                        wakeups.wake();
                    }
                    tracing::debug!("push notifications ended; listening again in 1 s");
                }
                Err(e) => {
                    tracing::debug!(error = %e, "listening for push notifications failed; retrying in 1 s")
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// The worker's poll strategy: fetch when a push is announced, and in any
/// case every `every` (a lost notification costs at most that). The timer
/// re-arms itself every time it fires: apalis' interval strategy replaces
/// its timer without polling it, so no waker is registered and an idle
/// worker can sleep until its next heartbeat.
#[derive(Debug)]
pub struct RearmingInterval {
    every: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    wakeups: Option<Arc<Wakeups>>,
    seen: u64,
}

impl RearmingInterval {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            sleep: None,
            wakeups: None,
            seen: 0,
        }
    }

    /// Also fetch as soon as `wakeups` says a push was announced.
    pub fn woken_by(mut self, wakeups: Arc<Wakeups>) -> Self {
        self.wakeups = Some(wakeups);
        self
    }
}

impl PollStrategy for RearmingInterval {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _snapshot: &PollSnapshot) -> Poll<Option<()>> {
        let mut woken = false;
        if let Some(w) = &self.wakeups {
            let seq = w.register(cx);
            woken = seq != self.seen;
            self.seen = seq;
        }
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
            Poll::Pending if woken => Poll::Ready(Some(())),
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
