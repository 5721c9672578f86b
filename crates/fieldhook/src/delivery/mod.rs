//! The delivery engine (webhooks.md, "Delivery"): claims due requests,
//! sends them, and records what happened — retry, suspension, probe.
//!
//! It is a step plus a loop. [`Engine::dispatch`] claims what is due now and
//! starts sending it; the loop around it wakes the moment a transaction
//! commits new requests or webhook changes, a slot frees (a POST ended, a
//! result was recorded) or the next retry falls due, with a slow safety
//! poll so that nothing depends on a wake-up arriving. Results are written
//! in batches through the group committer. Each webhook has a
//! bounded number of requests in flight, so one slow or dead endpoint never
//! holds up the others.

pub mod sender;

use crate::api::auth::TokenSigner;
use crate::clock::SharedClock;
use crate::domain::webhook::{Ordering, RetryPolicy, SIGNATURE_LEN, WebhookStatus};
use crate::error::Result;
use crate::storage::deliveries::{self, Attempt, Due, Target};
use crate::storage::sql::Conn;
use crate::storage::{Backend, Db};
use futures::StreamExt;
use hyper::header::{HeaderMap, HeaderValue};
use sender::Sender;
use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How the engine behaves; built from the configuration.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub timeout: Duration,
    pub policy: RetryPolicy,
    pub max_in_flight_per_webhook: usize,
    pub allow_private_targets: bool,
    pub token_ttl: Duration,
    pub retention: Duration,
}

/// Maps and sets keyed by uuids this server made (of requests, webhooks and
/// API keys): hashed with foldhash, not std's SipHash (see Cargo.toml).
pub(crate) type UuidMap<V> = std::collections::HashMap<Uuid, V, foldhash::fast::RandomState>;
pub(crate) type UuidSet = std::collections::HashSet<Uuid, foldhash::fast::RandomState>;

fn decrement(counts: &mut UuidMap<usize>, key: &Uuid) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// The next request read ahead for `webhook`, claimed for the slot of a
/// POST that just finished (which keeps its slot).
fn take_queued(f: &mut InFlight, webhook: &Uuid) -> Option<Due> {
    let queue = f.ahead.get_mut(webhook)?;
    while let Some(due) = queue.pop_front() {
        f.ahead_ids.remove(&due.request);
        if f.requests.insert(due.request) {
            *f.unrecorded.entry(*webhook).or_default() += 1;
            return Some(due);
        }
    }
    None
}

/// How long a claim holds a request for this node (PostgreSQL). Longer
/// than any attempt can take, so a slow node never has its request taken.
fn lease(timeout: Duration) -> Duration {
    timeout * 2 + Duration::from_secs(5)
}

/// The names of the headers every attempt carries (webhooks.md, "Headers").
mod header {
    use hyper::header::HeaderName;

    pub const DELIVERY_ATTEMPT: HeaderName = HeaderName::from_static("x-planado-delivery-attempt");
    pub const SECRET: HeaderName = HeaderName::from_static("x-planado-secret");
    pub const API_TOKEN: HeaderName = HeaderName::from_static("x-planado-api-token");
    pub const SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
    pub const TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
    pub const ID: HeaderName = HeaderName::from_static("webhook-id");
}

/// Requests a pruning transaction looks at (and deletes, if they are old
/// enough).
const PRUNE_BATCH: u64 = 5000;

/// Longest sleep between two looks at the queue, whatever the wake-ups say.
const SAFETY_POLL: Duration = Duration::from_secs(1);

/// How long the time of the next retry, once read, is trusted while other
/// work keeps the loop turning.
const LOOK_AGAIN: Duration = Duration::from_millis(50);

/// Requests this node is working on. A request holds an HTTP slot of its
/// webhook while its POST is under way, and stays claimed (never sent
/// again) until its result is committed — which can be later, since results
/// are written in batches.
#[derive(Default)]
struct InFlight {
    /// Claimed and not yet recorded.
    requests: UuidSet,
    /// Of those, per webhook.
    unrecorded: UuidMap<usize>,
    /// POSTs under way, per webhook: what the in-flight bound limits.
    per_webhook: UuidMap<usize>,
    /// Requests recorded since the current dispatch pass began. A claim
    /// query that started before their result committed may still return
    /// them as scheduled; they must not be sent again.
    finished_this_pass: UuidSet,
    /// SQLite: due requests read ahead, per webhook, in claim order, not yet
    /// sent. One process sends from a SQLite file, so what it has read stays
    /// due until it sends it; reading a few hundred at once spares a claim
    /// query (which returns the unrecorded requests again) per freed slot.
    ahead: UuidMap<VecDeque<Due>>,
    /// The requests in `ahead`.
    ahead_ids: UuidSet,
    /// The list of webhooks `ahead` was last checked against (held, so
    /// that a new list can never share its address).
    ahead_checked_against: Option<Arc<Vec<Arc<Target>>>>,
    /// SQLite: what the last read-ahead claim of each webhook found, while
    /// nothing it could not see has happened since. Cleared whenever
    /// something may have added work a claim has to find (see
    /// [`Shared::last_claim`]).
    last_claims: UuidMap<LastClaim>,
    /// Bumped whenever `last_claims` is cleared, so that a claim under way
    /// then does not leave what it found behind (it may have read past
    /// requests that were held when it began and are not any more).
    claims_reset: u64,
}

/// What a read-ahead claim of one webhook found (SQLite).
#[derive(Debug, Clone, Copy)]
struct LastClaim {
    /// The committer's requests generation before the claim began.
    requests_generation: u64,
    at: chrono::DateTime<chrono::Utc>,
    /// It found every due request: `ahead` and the hand-offs since hold all
    /// the webhook's due work ([`Shared::caught_up`]).
    all_due: bool,
    /// Where it stopped in claim order. Every due request before it is held
    /// by this process, so the next claim starts there
    /// ([`Shared::resume_at`]).
    end: Option<deliveries::Position>,
}

impl InFlight {
    /// Forgets what the last claims found: each webhook is claimed for
    /// again, from the start of the claim order.
    fn forget_claims(&mut self) {
        self.last_claims.clear();
        self.claims_reset += 1;
    }

    /// Forgets what was read ahead for `webhook` (paused, removed, suspended).
    fn drop_ahead(&mut self, webhook: &Uuid) {
        if let Some(queue) = self.ahead.remove(webhook) {
            for due in queue {
                self.ahead_ids.remove(&due.request);
            }
        }
    }
}

/// Attempts recorded per write, at most, and the number worth lingering
/// for while more attempts are under way (for at most `RESULT_LINGER`).
/// Much of a write's cost is per page: the WAL takes every page a commit
/// touched, and a request's page holds dozens of requests sent one after
/// the other. 1,024 results per write took 5–10 % less CPU in a drain than
/// 256 (docs/benchmarks.md, nineteenth round); a result reaches the request
/// log at most 20 ms later for it, and the receivers are not kept waiting.
const MAX_RESULT_BATCH: usize = 2048;
const RESULT_BATCH: usize = 1024;
const RESULT_LINGER: Duration = Duration::from_millis(20);

/// PostgreSQL: how many webhooks a dispatch pass claims for at once, each
/// on a connection of the read pool (of 16), which the API shares.
const CONCURRENT_CLAIMS: usize = 4;

/// How many due requests a SQLite claim reads ahead for one webhook.
const READ_AHEAD: usize = 512;

/// The read-ahead queue is topped up once it holds fewer than this. Half
/// the read-ahead: a claim then runs while the queue still has work for
/// every slot, so the POSTs never wait for it (with a refill at one round
/// of slots, the queue ran dry while the claim read).
const REFILL_BELOW: usize = READ_AHEAD / 2;

/// At most this many requests wait in a webhook's read-ahead queue after
/// hand-offs; beyond it, fresh requests are left to a claim.
const HANDOFF_QUEUE: usize = 4 * READ_AHEAD;

/// How long a claim that found every due request of a webhook is trusted
/// (on the injected clock), while commits hand new ones over: long enough
/// to spare the claims of a busy stream, short enough that a retry falling
/// due is picked up at once.
const CAUGHT_UP_FOR: chrono::TimeDelta = chrono::TimeDelta::milliseconds(100);

struct Shared {
    db: Db,
    clock: SharedClock,
    config: DeliveryConfig,
    sender: Sender,
    tokens: TokenSigner,
    node: String,
    in_flight: Mutex<InFlight>,
    results: mpsc::UnboundedSender<Attempt>,
    /// Rung when a send finished and its slot is free again.
    freed: Notify,
    /// SQLite: the webhooks last read.
    targets: Mutex<Option<CachedTargets>>,
    attempt_metrics: AttemptMetrics,
    /// Set once the loop has stopped: a finished POST takes no next request.
    halted: AtomicBool,
    /// The temporary token last issued per key, with its expiry (`token`).
    tokens_issued: Mutex<UuidMap<(i64, HeaderValue)>>,
    handed_over: metrics::Counter,
    /// PostgreSQL: where each webhook's last full claim stopped
    /// ([`DrainCursor`]).
    cursors: Mutex<UuidMap<DrainCursor>>,
    /// Held through a refresh of the backlog gauges, read and set: two
    /// refreshes (the periodic one, one asked for) never interleave, so an
    /// older count never overwrites a newer one.
    refreshing_gauges: tokio::sync::Mutex<()>,
}

/// PostgreSQL: where a webhook's last claim stopped while it found as many
/// requests as it asked for, so that the next one starts after it. Each
/// delivered request leaves dead entries at the head of the claim index
/// (its lease and its result both move it), and a claim from the head
/// walked over all of them: a drain slowed as it went (docs/benchmarks.md,
/// sixteenth round). Requests before the cursor can still be due: one
/// written by a commit under way with an earlier time than the cursor's,
/// say. (While other nodes hold leases of the webhook, a claim takes less
/// than it asks for and leaves no cursor, so what they hold is not passed
/// over.) So a chain of claims goes back to the head after [`CURSOR_FOR`],
/// and whenever a claim finds fewer than it asked for. Never for entity
/// ordering (a result lets earlier requests go) or probes.
#[derive(Debug, Clone, Copy)]
struct DrainCursor {
    after: deliveries::Position,
    /// When the chain of claims began at the head.
    since: std::time::Instant,
}

/// How long claims chain from a [`DrainCursor`] before one starts at the
/// head again: what a due request passed over may wait, at most.
const CURSOR_FOR: Duration = Duration::from_millis(100);

/// How much a claim asks for.
#[derive(Debug, Clone, Copy)]
struct Ask {
    /// Requests not held by this process: the free slots, or on SQLite a
    /// read-ahead's worth.
    fresh: i64,
    /// SQLite: how many requests this process holds for the webhook, which
    /// a claim from the start of the claim order reads past.
    held: i64,
    /// SQLite: where the last claim stopped, if it still holds
    /// ([`Shared::resume_at`]).
    resume: Option<deliveries::Position>,
}

/// What a claim found.
struct Claimed {
    due: Vec<Due>,
    /// SQLite: every due request was found (fewer than asked for).
    all_due: bool,
    /// SQLite: the position of the last request read, in claim order.
    end: Option<deliveries::Position>,
}

impl Shared {
    /// Whether the list of webhooks read at `stamp` is still good to serve from.
    fn is_current(&self, stamp: ListStamp) -> bool {
        self.db.committer.webhooks_generation() == Some(stamp.generation) && stamp.read_at.elapsed() < SAFETY_POLL
    }

    /// The last read-ahead claim of `webhook`, if what it found still holds:
    /// no commit since wrote a request without handing it over (a retry, a
    /// resend, one the engine did not take), and the claim is recent enough
    /// that no retry can have fallen due since unnoticed.
    fn last_claim(&self, f: &InFlight, webhook: &Uuid, now: chrono::DateTime<chrono::Utc>) -> Option<LastClaim> {
        f.last_claims.get(webhook).copied().filter(|c| {
            Some(c.requests_generation) == self.db.committer.requests_generation()
                && now >= c.at
                && now - c.at < CAUGHT_UP_FOR
        })
    }

    /// Whether the read-ahead queue of `webhook` holds all its due work, so
    /// that no claim is needed: its last claim found every due request.
    fn caught_up(&self, f: &InFlight, webhook: &Uuid, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.last_claim(f, webhook, now).is_some_and(|c| c.all_due)
    }

    /// Where the next claim of `webhook` starts, when its last claim says:
    /// every due request before that position is held by this process,
    /// since nothing has written a request a claim must find (the
    /// generation), and whatever fell due since has a later `send_at`. It
    /// spares the claim [`deliveries::due_positions`], which reads past the
    /// requests this process holds, a few hundred per claim in a drain.
    /// Not for entity ordering, whose blocked requests are let go by a
    /// result, not by a new request.
    fn resume_at(
        &self,
        f: &InFlight,
        target: &Target,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<deliveries::Position> {
        if target.ordering != Ordering::None {
            return None;
        }
        self.last_claim(f, &target.uuid, now).and_then(|c| c.end)
    }

    /// Whether `webhook`'s read-ahead queue is to be topped up by a claim
    /// (SQLite). POSTs under way take the next queued request themselves
    /// when they finish (`send`), so this is asked while slots are busy too:
    /// the queue runs low, and the last claim may have missed something.
    fn needs_refill(&self, f: &InFlight, webhook: &Uuid, now: chrono::DateTime<chrono::Utc>) -> bool {
        f.ahead.get(webhook).map_or(0, VecDeque::len) < REFILL_BELOW && !self.caught_up(f, webhook, now)
    }

    /// SQLite's claim, which has no lease: the requests this process holds
    /// come first in claim order, so it starts at the first one it does not
    /// hold — where the last claim stopped (`resume`, then `limit` counts
    /// only what is not held), or else found by
    /// [`deliveries::due_positions`].
    #[allow(clippy::too_many_arguments)]
    async fn claim_sqlite(
        &self,
        conn: &mut Conn,
        target: &Target,
        ask: Ask,
        bound: i64,
        now: chrono::DateTime<chrono::Utc>,
        probe: bool,
        lease: Duration,
    ) -> Result<Claimed> {
        let (mut from, mut limit) = (None, ask.fresh + ask.held);
        if let Some(resume) = ask.resume {
            from = Some(resume);
            limit = ask.fresh;
        } else if !probe {
            let positions = deliveries::due_positions(conn, target, limit, now)?;
            let f = self.in_flight.lock().expect("in-flight lock");
            let held =
                |id: &Uuid| f.requests.contains(id) || f.ahead_ids.contains(id) || f.finished_this_pass.contains(id);
            let Some(first) = positions.iter().position(|p| !held(&p.uuid)) else {
                return Ok(Claimed {
                    all_due: (positions.len() as i64) < limit,
                    end: positions.last().copied(),
                    due: Vec::new(),
                });
            };
            from = Some(positions[first]);
            limit -= first as i64;
        }
        let (due, end) = deliveries::claim(conn, target, limit, bound, now, probe, lease, &self.node, from).await?;
        // Fewer rows than asked for: every due request from `from` on.
        Ok(Claimed { all_due: (due.len() as i64) < limit, end: end.or(from), due })
    }

    /// Takes the fresh requests of a commit, handed over by the committer
    /// (SQLite), into the read-ahead queues of active webhooks without
    /// entity ordering, as the current list has them. Says whether it took
    /// them all; for what it leaves, the committer bumps its requests
    /// generation, so that a claim finds it.
    ///
    /// It takes them even while a claim for the webhook is under way or due
    /// (not [`caught_up`](Self::caught_up)): the claim skips what the queue
    /// holds, and what it reads is queued behind them. Such a webhook is
    /// promised no order (webhooks.md, "Out of order": receivers order by
    /// `version`); refusing instead sent every commit made during a claim
    /// to the next claim, and under a steady stream that next claim was
    /// never the last.
    fn take_fresh(&self, fresh: Vec<Due>) -> bool {
        if self.halted.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        let cached = self.targets.lock().expect("targets lock");
        let Some(list) = cached.as_ref().filter(|c| self.is_current(c.stamp)) else {
            return false;
        };
        let mut f = self.in_flight.lock().expect("in-flight lock");
        let offered = fresh.len();
        let mut taken = 0;
        for due in fresh {
            let served = list
                .by_uuid
                .get(&due.webhook)
                .is_some_and(|t| t.status == WebhookStatus::Active && t.ordering == Ordering::None);
            let room = f.ahead.get(&due.webhook).map_or(0, VecDeque::len) < HANDOFF_QUEUE;
            // Never queued twice. (A claim cannot have read these first: it
            // waits for its reads to be durable, which comes after the
            // hand-off; this only keeps it so.)
            let held = f.ahead_ids.contains(&due.request) || f.requests.contains(&due.request);
            if held {
                taken += 1;
            } else if served && room {
                f.ahead_ids.insert(due.request);
                f.ahead.entry(due.webhook).or_default().push_back(due);
                taken += 1;
            }
        }
        drop(f);
        drop(cached);
        self.handed_over.increment(taken as u64);
        self.freed.notify_one();
        taken == offered
    }
}

/// The metrics every attempt touches, looked up once: through the macros
/// each update is a registry look-up (hashing the name and labels).
struct AttemptMetrics {
    successes: metrics::Counter,
    latency: metrics::Histogram,
    duration: metrics::Histogram,
}

impl AttemptMetrics {
    fn new() -> Self {
        Self {
            successes: metrics::counter!(crate::metrics::DELIVERIES, "outcome" => "success"),
            latency: metrics::histogram!(crate::metrics::DELIVERY_LATENCY),
            duration: metrics::histogram!(crate::metrics::ATTEMPT_DURATION),
        }
    }
}

/// The webhooks as last read, with the committer's webhook generation they
/// reflect and when they were read.
struct CachedTargets {
    stamp: ListStamp,
    targets: Arc<Vec<Arc<Target>>>,
    /// The same, by uuid (for hand-offs).
    by_uuid: UuidMap<Arc<Target>>,
}

/// Which read of the webhooks a list is (SQLite): the committer's webhook
/// generation it reflects, and when it was read. A POST that finished may
/// take the next read-ahead request of its webhook only while its list is
/// still the current one — no webhook changed since, and it is younger
/// than the safety poll (a CLI command may have written beside the server).
#[derive(Debug, Clone, Copy)]
struct ListStamp {
    generation: u64,
    read_at: std::time::Instant,
}

/// The delivery engine of one node. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    results_rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Attempt>>>,
    wake: Arc<Notify>,
}

/// What one dispatch step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dispatched {
    /// This many requests were claimed and are being sent.
    pub started: usize,
    /// Due work may be left waiting for a slot: a POST or a record under
    /// way will free one, and its end wakes the loop.
    pub waiting: bool,
}

impl Engine {
    pub fn new(db: Db, clock: SharedClock, config: DeliveryConfig, tokens: TokenSigner) -> Self {
        let (results, results_rx) = mpsc::unbounded_channel();
        let sender = Sender::new(config.timeout, config.allow_private_targets);
        Engine {
            shared: Arc::new(Shared {
                db,
                clock,
                config,
                sender,
                tokens,
                node: Uuid::new_v4().to_string(),
                in_flight: Mutex::new(InFlight::default()),
                results,
                freed: Notify::new(),
                targets: Mutex::new(None),
                attempt_metrics: AttemptMetrics::new(),
                halted: AtomicBool::new(false),
                tokens_issued: Mutex::default(),
                handed_over: metrics::counter!(crate::metrics::HANDED_OVER),
                cursors: Mutex::default(),
                refreshing_gauges: tokio::sync::Mutex::new(()),
            }),
            results_rx: Arc::new(tokio::sync::Mutex::new(results_rx)),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Makes the loop look at the queue now, claims included (tests that
    /// move the clock).
    pub fn wake(&self) {
        self.shared.in_flight.lock().expect("in-flight lock").forget_claims();
        self.wake.notify_one();
    }

    /// Claims what is due now and starts sending it.
    ///
    /// # Errors
    /// Database errors; the loop logs them and tries again.
    pub async fn dispatch(&self) -> Result<Dispatched> {
        let s = &self.shared;
        s.in_flight.lock().expect("in-flight lock").finished_this_pass.clear();
        let now = s.clock.now();
        let (all, stamp) = self.targets().await?;
        let targets: Vec<Arc<Target>> = all.iter().filter(|t| t.is_due(now)).cloned().collect();
        {
            // Read-ahead is only for webhooks that are still served normally.
            // Statuses change only with a new list, so the check is needed
            // once per list, not at every pass (a pass per finished POST).
            let mut f = s.in_flight.lock().expect("in-flight lock");
            if !f.ahead_checked_against.as_ref().is_some_and(|checked| Arc::ptr_eq(checked, &all)) {
                // An entity-ordered webhook's read-ahead is read again with
                // every new list: it may hold requests handed over while the
                // webhook had no ordering, which must not go out past the
                // switch without waiting for their earlier versions. (A new
                // list comes with each change to webhooks or keys and at least
                // every safety poll: one claim a second at most, which a new
                // list asks for anyway, as it clears `last_claims`.)
                let serving: UuidSet = targets
                    .iter()
                    .filter(|t| t.status == WebhookStatus::Active && t.ordering == Ordering::None)
                    .map(|t| t.uuid)
                    .collect();
                let stale: Vec<Uuid> = f.ahead.keys().filter(|w| !serving.contains(w)).copied().collect();
                for webhook in stale {
                    f.drop_ahead(&webhook);
                }
                f.ahead_checked_against = Some(all.clone());
            }
        }
        // PostgreSQL claims go out together, each on a connection of its
        // own: a pass over several webhooks took a claim's three round
        // trips per webhook, one after another. SQLite's run one at a time
        // on the blocking pool, as they always have.
        let passes: Vec<_> = targets.into_iter().map(|target| self.dispatch_to(target, now, stamp)).collect();
        let outcomes: Vec<Result<(usize, bool)>> = match s.db.backend {
            Backend::Sqlite => {
                let mut outcomes = Vec::new();
                for pass in passes {
                    outcomes.push(pass.await);
                }
                outcomes
            }
            Backend::Postgres => futures::stream::iter(passes).buffer_unordered(CONCURRENT_CLAIMS).collect().await,
        };
        let (mut started, mut waiting) = (0, false);
        for outcome in outcomes {
            let (n, w) = outcome?;
            started += n;
            waiting |= w;
        }
        Ok(Dispatched { started, waiting })
    }

    /// One webhook's part of a dispatch pass: claims for it if it has room
    /// (or, on SQLite, its read-ahead runs low) and starts its sends. Says
    /// how many it started and whether due work may be left waiting.
    async fn dispatch_to(
        &self,
        target: Arc<Target>,
        now: chrono::DateTime<chrono::Utc>,
        stamp: Option<ListStamp>,
    ) -> Result<(usize, bool)> {
        let s = &self.shared;
        let mut started = 0;
        let mut waiting = false;
        let probe = target.status == WebhookStatus::Suspended;
        let bound = if probe { 1 } else { s.config.max_in_flight_per_webhook };
        let read_ahead = s.db.backend == Backend::Sqlite && !probe;
        // Read before the cursor is checked against it: what the claim
        // finds is good until the next commit a claim must look for.
        let generation = s.db.committer.requests_generation();
        let (room, held, queued, refill, reset, resume) = {
            let f = s.in_flight.lock().expect("in-flight lock");
            let busy = f.per_webhook.get(&target.uuid).copied().unwrap_or(0);
            let held = f.unrecorded.get(&target.uuid).copied().unwrap_or(0);
            let queued = f.ahead.get(&target.uuid).map_or(0, VecDeque::len);
            let refill = read_ahead && s.needs_refill(&f, &target.uuid, now);
            // Only a refill claims with a read-ahead's worth.
            let resume = if refill { s.resume_at(&f, &target, now) } else { None };
            (bound.saturating_sub(busy), held, queued, refill, f.claims_reset, resume)
        };
        // One probe at a time: not while the last one awaits its record.
        if (room == 0 && !refill) || (probe && held > 0) {
            return Ok((0, true));
        }
        if !read_ahead || refill {
            // SQLite has no lease: the rows this node holds come back from
            // the query and are skipped below. PostgreSQL leases hide them,
            // and every row returned is claimed, so take just `room`.
            let ask = match s.db.backend {
                Backend::Sqlite if read_ahead => {
                    Ask { fresh: READ_AHEAD.max(room) as i64, held: (held + queued) as i64, resume }
                }
                Backend::Sqlite => Ask { fresh: room as i64, held: held as i64, resume: None },
                Backend::Postgres => Ask { fresh: room as i64, held: 0, resume: None },
            };
            let Claimed { due: claimed, all_due, end } = self.claim(&target, ask, bound as i64, now, probe).await?;
            // A claim that filled the room may have left due requests
            // behind. (With a read-ahead, the queue says so below.)
            if !read_ahead && claimed.len() as i64 >= ask.fresh {
                waiting = true;
            }
            let mut f = s.in_flight.lock().expect("in-flight lock");
            let f = &mut *f;
            if let Some(requests_generation) = generation
                && read_ahead
                && f.claims_reset == reset
            {
                f.last_claims.insert(target.uuid, LastClaim { requests_generation, at: now, all_due, end });
            }
            let queue = f.ahead.entry(target.uuid).or_default();
            let before = queue.len();
            for due in claimed {
                if !(f.requests.contains(&due.request)
                    || f.ahead_ids.contains(&due.request)
                    || f.finished_this_pass.contains(&due.request))
                {
                    f.ahead_ids.insert(due.request);
                    queue.push_back(due);
                }
            }
            if queue.len() > before {
                metrics::histogram!(crate::metrics::CLAIM_BATCH).record((queue.len() - before) as f64);
            }
        }
        let mut f = s.in_flight.lock().expect("in-flight lock");
        let mut taken = Vec::with_capacity(room);
        if let Some(queue) = f.ahead.get_mut(&target.uuid) {
            while taken.len() < room
                && let Some(due) = queue.pop_front()
            {
                taken.push(due);
            }
        }
        if !read_ahead {
            // What was claimed beyond the room (PostgreSQL: nothing;
            // a probe: nothing) is not kept.
            f.drop_ahead(&target.uuid);
        } else if f.ahead.get(&target.uuid).is_some_and(|q| !q.is_empty()) {
            waiting = true;
        }
        for due in taken {
            f.ahead_ids.remove(&due.request);
            if !f.requests.insert(due.request) {
                continue;
            }
            *f.per_webhook.entry(target.uuid).or_default() += 1;
            *f.unrecorded.entry(target.uuid).or_default() += 1;
            started += 1;
            let engine = self.clone();
            let target = target.clone();
            let chain = if read_ahead { stamp } else { None };
            tokio::spawn(async move { engine.send(due, target, probe, chain).await });
        }
        Ok((started, waiting))
    }

    /// The webhooks to serve. On SQLite every change to webhooks or keys
    /// goes through this process's committer, which counts them: the list
    /// read last stays good until that count moves (re-read at least every
    /// safety poll, for a CLI command writing beside the server). PostgreSQL
    /// reads it each pass, since other nodes change webhooks too.
    async fn targets(&self) -> Result<(Arc<Vec<Arc<Target>>>, Option<ListStamp>)> {
        let s = &self.shared;
        let generation = s.db.committer.webhooks_generation();
        if generation.is_some() {
            let cached = s.targets.lock().expect("targets lock");
            if let Some(c) = cached.as_ref()
                && s.is_current(c.stamp)
            {
                return Ok((c.targets.clone(), Some(c.stamp)));
            }
        }
        // A new list may serve webhooks differently (resumed, say): every
        // webhook is claimed for again, from the start.
        s.in_flight.lock().expect("in-flight lock").forget_claims();
        let mut conn = s.db.read.acquire().await?;
        let targets = Arc::new(deliveries::targets(&mut conn).await?);
        let stamp = generation.map(|generation| ListStamp { generation, read_at: std::time::Instant::now() });
        if let Some(stamp) = stamp {
            let by_uuid = targets.iter().map(|t| (t.uuid, t.clone())).collect();
            *s.targets.lock().expect("targets lock") = Some(CachedTargets { stamp, targets: targets.clone(), by_uuid });
        }
        Ok((targets, stamp))
    }

    /// Claims for one webhook; a probe is its oldest pending request, due or
    /// not. Says, on SQLite, whether the claim found every due request
    /// (fewer were due than `limit`).
    async fn claim(
        &self,
        target: &Arc<Target>,
        ask: Ask,
        bound: i64,
        now: chrono::DateTime<chrono::Utc>,
        probe: bool,
    ) -> Result<Claimed> {
        let s = &self.shared;
        let lease = lease(s.config.timeout);
        match s.db.backend {
            // One process sends from a SQLite file: no lease to write, the
            // in-flight set is the claim. A read-ahead claim reads hundreds
            // of rows, bodies included: it runs on the blocking pool, so that
            // the runtime's threads go on driving the POSTs meanwhile (on the
            // runtime it held one of two workers for a millisecond or more).
            Backend::Sqlite => {
                let (shared, target) = (self.shared.clone(), target.clone());
                let claimed = s
                    .db
                    .read
                    .run_long(move |conn| {
                        Box::pin(async move { shared.claim_sqlite(conn, &target, ask, bound, now, probe, lease).await })
                    })
                    .await?;
                // The claim may have read a commit the syncer has not made
                // durable yet: nothing it found is sent before it is.
                s.db.committer.reads_settled().await;
                claimed
            }
            Backend::Postgres => {
                let chained = !probe && target.ordering == Ordering::None;
                let cursor = {
                    let mut cursors = s.cursors.lock().expect("cursors lock");
                    match cursors.get(&target.uuid) {
                        Some(c) if chained && c.since.elapsed() < CURSOR_FOR => Some(*c),
                        Some(_) => {
                            cursors.remove(&target.uuid);
                            None
                        }
                        None => None,
                    }
                };
                let mut conn = s.db.read.acquire().await?;
                let (due, end) = deliveries::claim(
                    &mut conn,
                    target,
                    ask.fresh,
                    bound,
                    now,
                    probe,
                    lease,
                    &s.node,
                    cursor.map(|c| c.after),
                )
                .await?;
                let mut cursors = s.cursors.lock().expect("cursors lock");
                match end {
                    Some(after) if chained && due.len() as i64 >= ask.fresh => {
                        let since = cursor.map_or_else(std::time::Instant::now, |c| c.since);
                        cursors.insert(target.uuid, DrainCursor { after, since });
                    }
                    _ => {
                        cursors.remove(&target.uuid);
                    }
                }
                Ok(Claimed { due, all_due: false, end: None })
            }
        }
    }

    /// Makes one attempt and hands its result to the recorder; then, with
    /// `chain` (SQLite read-ahead), takes the next queued request of the
    /// same webhook while the list of webhooks it came from is current, so
    /// that a busy webhook costs no task and no dispatch pass per POST.
    async fn send(&self, mut due: Due, target: Arc<Target>, probe: bool, chain: Option<ListStamp>) {
        let s = &self.shared;
        loop {
            let attempt = self.attempt(due, &target, probe).await;
            // The POST is over: its slot goes to the next queued request, or
            // is free again; the request itself stays claimed until its
            // result is committed.
            let next = {
                let mut f = s.in_flight.lock().expect("in-flight lock");
                let next = match chain {
                    Some(stamp) if !s.halted.load(std::sync::atomic::Ordering::Relaxed) && s.is_current(stamp) => {
                        take_queued(&mut f, &target.uuid)
                    }
                    _ => None,
                };
                match next {
                    Some(next) => {
                        let low = s.needs_refill(&f, &target.uuid, s.clock.now());
                        Some((next, low))
                    }
                    None => {
                        decrement(&mut f.per_webhook, &target.uuid);
                        None
                    }
                }
            };
            if s.results.send(attempt).is_err() {
                tracing::warn!("delivery recorder has stopped; the attempt will be repeated");
            }
            match next {
                Some((next, low)) => {
                    if low {
                        // The queue runs low: a dispatch pass tops it up.
                        s.freed.notify_one();
                    }
                    due = next;
                }
                None => {
                    s.freed.notify_one();
                    return;
                }
            }
        }
    }

    /// One HTTP attempt and its metrics.
    async fn attempt(&self, mut due: Due, target: &Target, probe: bool) -> Attempt {
        let s = &self.shared;
        let now = s.clock.now();
        let headers = self.headers(&due, target, now);
        // The body is sent once; the attempt's record needs everything but it.
        let body = std::mem::take(&mut due.body);
        let answer = s.sender.post(&target.endpoint, headers, body).await;
        let outcome = crate::metrics::outcome(answer.code, answer.error_type);
        let m = &s.attempt_metrics;
        if outcome == "success" {
            if due.attempt_no == 1 {
                // The answer came `elapsed` after `now`: no second reading
                // of the clock per delivery.
                let latency = (now - due.event_created_at).to_std().unwrap_or_default() + answer.elapsed;
                m.latency.record(latency.as_secs_f64());
            }
            m.successes.increment(1);
        } else {
            metrics::counter!(crate::metrics::DELIVERIES, "outcome" => outcome).increment(1);
        }
        m.duration.record(answer.elapsed.as_secs_f64());
        Attempt {
            due,
            probe,
            sent_at: now,
            elapsed_ms: answer.elapsed.as_millis() as i64,
            response_code: answer.code,
            response_headers: answer.headers,
            response_body: answer.body,
            error_type: answer.error_type,
            error_description: answer.error_description,
            retry_after: answer.retry_after,
        }
    }

    /// The headers of webhooks.md ("Headers"). Built for every attempt, so
    /// with as few allocations as it takes: the names are constants, and
    /// the values that change per attempt (number, timestamp, id,
    /// signature) are written into one buffer that each value then shares
    /// a slice of, rather than one allocation apiece.
    fn headers(&self, due: &Due, target: &Target, now: chrono::DateTime<chrono::Utc>) -> HeaderMap {
        let mut h = HeaderMap::with_capacity(8);
        h.insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let timestamp = now.timestamp();
        // An i64 takes at most 20 characters, its sign included.
        let mut buf = Vec::with_capacity(2 * 20 + uuid::fmt::Hyphenated::LENGTH + SIGNATURE_LEN);
        let mut digits = itoa::Buffer::new();
        buf.extend_from_slice(digits.format(due.attempt_no).as_bytes());
        let attempt_end = buf.len();
        buf.extend_from_slice(digits.format(timestamp).as_bytes());
        let timestamp_end = buf.len();
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = &*due.event_uuid.hyphenated().encode_lower(&mut id);
        buf.extend_from_slice(id.as_bytes());
        let id_end = buf.len();
        target.signer.sign_into(id, timestamp, &due.body, &mut buf);
        let buf = bytes::Bytes::from(buf);
        // Digits, a uuid, base64: always valid header values.
        let mut put = |name, range| {
            if let Ok(v) = HeaderValue::from_maybe_shared(buf.slice(range)) {
                h.insert(name, v);
            }
        };
        put(header::DELIVERY_ATTEMPT, 0..attempt_end);
        put(header::TIMESTAMP, attempt_end..timestamp_end);
        put(header::ID, timestamp_end..id_end);
        put(header::SIGNATURE, id_end..buf.len());
        if let Some(secret) = &target.secret {
            h.insert(header::SECRET, secret.clone());
        }
        if let Some(key) = target.token_key
            && let Some(token) = self.token(key, now)
        {
            h.insert(header::API_TOKEN, token);
        }
        h
    }

    /// The temporary API token for `key` at `now`. Its expiry moves in
    /// whole seconds ([`TokenSigner::expiry`]), so every attempt within the
    /// same second shares one token: an HMAC per key per second, not per
    /// attempt.
    fn token(&self, key: Uuid, now: chrono::DateTime<chrono::Utc>) -> Option<HeaderValue> {
        let s = &self.shared;
        let expires = TokenSigner::expiry(now, s.config.token_ttl);
        let mut cache = s.tokens_issued.lock().expect("token cache lock");
        if let Some((at, token)) = cache.get(&key)
            && *at == expires
        {
            return Some(token.clone());
        }
        let token = HeaderValue::from_str(&s.tokens.issue_until(key, expires)).ok()?;
        cache.insert(key, (expires, token.clone()));
        Some(token)
    }

    /// Writes finished attempts in batches; frees their in-flight slots once
    /// the batch is committed (until then the rows still say `scheduled`).
    async fn record_results(&self, stop: CancellationToken) {
        let s = &self.shared;
        let mut rx = self.results_rx.lock().await;
        let mut batch = Vec::new();
        loop {
            let first = tokio::select! {
                a = rx.recv() => a,
                _ = stop.cancelled(), if self.in_flight_count() == 0 => None,
            };
            let Some(first) = first else { return };
            batch.push(first);
            // Results that commit together share the pages they touch and
            // the fsync: a drain recorded 13 attempts per transaction when
            // each write took whatever had arrived. So while more attempts
            // are under way, gather for a moment longer. The receivers have
            // their POSTs already; only the request log waits.
            let linger = tokio::time::Instant::now() + RESULT_LINGER;
            while batch.len() < MAX_RESULT_BATCH {
                if let Ok(a) = rx.try_recv() {
                    batch.push(a);
                    continue;
                }
                let more_coming = self.in_flight_count() > batch.len();
                if batch.len() >= RESULT_BATCH || !more_coming {
                    break;
                }
                match tokio::time::timeout_at(linger, rx.recv()).await {
                    Ok(Some(a)) => batch.push(a),
                    _ => break,
                }
            }
            // A buffer the size of this batch stays behind: `take` left an
            // empty one, and the next batch grew it again, copying attempts
            // at each doubling. Not the largest size: room for 2,048
            // attempts of a few hundred bytes each, allocated for every write
            // even when a quiet server records one attempt at a time.
            let sized = batch.len().next_power_of_two().min(MAX_RESULT_BATCH);
            let mut attempts = std::mem::replace(&mut batch, Vec::with_capacity(sized));
            metrics::histogram!(crate::metrics::RESULT_BATCH).record(attempts.len() as f64);
            let finished: Vec<(Uuid, Uuid)> = attempts.iter().map(|a| (a.due.request, a.due.webhook)).collect();
            let policy = s.config.policy.clone();
            let now = s.clock.now();
            let written = s
                .db
                .committer
                .write(move |conn| Box::pin(async move { deliveries::record(conn, &mut attempts, &policy, now).await }))
                .await;
            let failed = written.is_err();
            match written {
                Ok(r) => {
                    metrics::counter!(crate::metrics::RETRIES).increment(r.retries as u64);
                    metrics::counter!(crate::metrics::EXHAUSTED).increment(r.exhausted as u64);
                }
                // The rows still say `scheduled`: they will be sent again.
                Err(e) => tracing::error!(error = %e, "could not record delivery results"),
            }
            // A recorded result of an entity-ordered webhook can let the next
            // version of its resource go, which only a claim finds: such a
            // webhook is no longer caught up. (Read before the in-flight
            // lock, which `take_fresh` takes inside the targets lock.)
            let unblocking: UuidSet = s
                .targets
                .lock()
                .expect("targets lock")
                .as_ref()
                .map(|cached| {
                    finished
                        .iter()
                        .map(|(_, webhook)| *webhook)
                        .filter(|w| cached.by_uuid.get(w).is_some_and(|t| t.ordering == Ordering::Entity))
                        .collect()
                })
                .unwrap_or_default();
            {
                let mut f = s.in_flight.lock().expect("in-flight lock");
                for (request, webhook) in finished {
                    f.requests.remove(&request);
                    f.finished_this_pass.insert(request);
                    decrement(&mut f.unrecorded, &webhook);
                }
                for webhook in &unblocking {
                    f.last_claims.remove(webhook);
                }
                if failed {
                    // Those requests are due again, and claims may have
                    // read past them while they were held.
                    f.forget_claims();
                }
            }
            metrics::gauge!(crate::metrics::IN_FLIGHT).set(self.in_flight_count() as f64);
            s.freed.notify_one();
        }
    }

    fn in_flight_count(&self) -> usize {
        self.shared.in_flight.lock().expect("in-flight lock").requests.len()
    }

    /// Runs until `stop` is cancelled, then lets the attempts in flight
    /// finish, records them and hands back this node's claims.
    pub async fn run(self, stop: CancellationToken) {
        let recorder = tokio::spawn({
            let engine = self.clone();
            let stop = stop.clone();
            async move { engine.record_results(stop).await }
        });
        let pruner = tokio::spawn({
            let engine = self.clone();
            let stop = stop.clone();
            async move { engine.prune_loop(stop).await }
        });
        let stats = tokio::spawn({
            let engine = self.clone();
            let stop = stop.clone();
            async move { engine.stats_loop(stop).await }
        });
        let listener = (self.shared.db.backend == Backend::Postgres).then(|| {
            let engine = self.clone();
            let stop = stop.clone();
            tokio::spawn(async move { engine.listen(stop).await })
        });
        let s = &self.shared;
        // SQLite: the committer hands this engine each commit's new requests.
        let shared = Arc::downgrade(&self.shared);
        let handing_over =
            s.db.committer
                .hand_to(Some(Arc::new(move |fresh: Vec<Due>| shared.upgrade().is_some_and(|s| s.take_fresh(fresh)))));
        // When the next retry falls due, as last read, and when that was.
        let mut next_due: Option<(std::time::Instant, Duration)> = None;
        while !stop.is_cancelled() {
            let committed = s.db.committer.committed.notified();
            let woken = self.wake.notified();
            let freed = s.freed.notified();
            tokio::pin!(committed, woken, freed);
            committed.as_mut().enable();
            woken.as_mut().enable();
            freed.as_mut().enable();
            // Having started sends is no reason to look again at once: what
            // a pass leaves behind waits for a slot (its end wakes the loop),
            // and anything newer comes with a commit (which does).
            let (busy, waiting) = match self.dispatch().await {
                Ok(d) => (d.started > 0 || d.waiting, d.waiting),
                Err(e) => {
                    tracing::error!(error = %e, "dispatching deliveries failed");
                    (false, false)
                }
            };
            // A freed slot calls for a pass only while due work waits for
            // one, or (SQLite) when it brings a hand-off. On PostgreSQL
            // every POST's end woke a pass of several round trips that
            // mostly found nothing; what comes due meanwhile comes with a
            // commit, which wakes the loop itself.
            let freed_matters = waiting || handing_over;
            // A busy webhook ends a pass with every POST that finishes, so
            // while work waits for slots the time of the next retry (for
            // other webhooks) is read at most every LOOK_AGAIN, not per pass.
            let remembered = next_due.and_then(|(read_at, pause)| {
                let since = read_at.elapsed();
                (busy && since < LOOK_AGAIN && since < pause).then(|| pause - since)
            });
            let pause = match remembered {
                Some(pause) => pause,
                None => {
                    let pause = self.until_next_due().await;
                    next_due = Some((std::time::Instant::now(), pause));
                    pause
                }
            };
            tokio::select! {
                _ = committed => {}
                _ = woken => {}
                _ = freed, if freed_matters => {}
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => {}
            }
        }
        // Graceful stop: no new claims; what is in flight finishes (bounded
        // by the delivery timeout) and is recorded.
        s.halted.store(true, std::sync::atomic::Ordering::Relaxed);
        if handing_over {
            s.db.committer.hand_to(None);
        }
        let _ = recorder.await;
        pruner.abort();
        stats.abort();
        if let Some(listener) = listener {
            listener.abort();
        }
        if s.db.backend == Backend::Postgres {
            let node = s.node.clone();
            let released =
                s.db.committer.write(move |conn| Box::pin(async move { deliveries::release(conn, &node).await })).await;
            if let Err(e) = released {
                tracing::warn!(error = %e, "could not hand back claims; their leases will expire");
            }
        }
    }

    /// How long the loop may sleep: until the next retry is due, at most
    /// the safety poll. Work that is due but waits for a free slot or for an
    /// earlier event is woken by the commit of a result, not by polling.
    async fn until_next_due(&self) -> Duration {
        let s = &self.shared;
        let Ok(mut conn) = s.db.read.acquire().await else { return SAFETY_POLL };
        match deliveries::next_due_at(&mut conn).await {
            Ok(Some(at)) => match (at - s.clock.now()).to_std() {
                Ok(wait) if !wait.is_zero() => wait.min(SAFETY_POLL),
                _ => SAFETY_POLL,
            },
            _ => SAFETY_POLL,
        }
    }

    /// PostgreSQL: wakes this node whenever another node commits (new
    /// events, recorded results). This node's own commits wake it through
    /// the committer; their notifications, which come back here too, are
    /// skipped (each woke a second dispatch pass). A lost notification only
    /// costs latency: the loop also polls.
    async fn listen(&self, stop: CancellationToken) {
        let url = self.shared.db.url.clone();
        let own = self.shared.db.committer.wake_payload().map(str::to_owned);
        while !stop.is_cancelled() {
            match sqlx::postgres::PgListener::connect(&url).await {
                Ok(mut listener) => {
                    if let Err(e) = listener.listen(crate::storage::WAKE_CHANNEL).await {
                        tracing::warn!(error = %e, "cannot LISTEN for wake-ups; polling meanwhile");
                    } else {
                        loop {
                            tokio::select! {
                                n = listener.try_recv() => match n {
                                    Ok(Some(n)) if own.as_deref() == Some(n.payload()) => {}
                                    Ok(Some(_)) => self.wake(),
                                    // The connection dropped: notifications
                                    // may have been lost, so look now.
                                    Ok(None) => self.wake(),
                                    Err(e) => {
                                        tracing::warn!(error = %e, "wake-up listener failed; reconnecting");
                                        break;
                                    }
                                },
                                _ = stop.cancelled() => return,
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot open the wake-up listener; polling meanwhile"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Refreshes the gauges of pending requests and webhooks.
    pub async fn refresh_gauges(&self) -> Result<()> {
        let s = &self.shared;
        let _one_at_a_time = s.refreshing_gauges.lock().await;
        let now = s.clock.now();
        // It counts the whole backlog: off the runtime's threads.
        let (pending, webhooks) =
            s.db.read.run_long(move |conn| Box::pin(async move { deliveries::stats(conn, now).await })).await??;
        for state in ["due", "retrying", "held"] {
            let n = pending.iter().find(|(k, _)| k == state).map_or(0, |(_, n)| *n);
            metrics::gauge!(crate::metrics::PENDING, "state" => state).set(n as f64);
        }
        for status in ["active", "paused", "suspended"] {
            let n = webhooks.iter().find(|(k, _)| k == status).map_or(0, |(_, n)| *n);
            metrics::gauge!(crate::metrics::WEBHOOKS, "status" => status).set(n as f64);
        }
        Ok(())
    }

    async fn stats_loop(&self, stop: CancellationToken) {
        loop {
            if let Err(e) = self.refresh_gauges().await {
                tracing::debug!(error = %e, "could not refresh the gauges");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Deletes the sent requests older than the retention period, looking
    /// at [`PRUNE_BATCH`] requests per transaction with `between` in
    /// between; returns how many went.
    ///
    /// # Errors
    /// Database errors.
    pub async fn prune_pass(&self, between: Duration) -> Result<u64> {
        let s = &self.shared;
        let before = s.clock.now() - chrono::TimeDelta::from_std(s.config.retention).unwrap_or_default();
        let mut after = String::new();
        let mut deleted = 0;
        loop {
            let (gone, next) = s
                .db
                .committer
                .write(move |conn| Box::pin(async move { deliveries::prune(conn, before, &after, PRUNE_BATCH).await }))
                .await?;
            deleted += gone;
            match next {
                Some(next) => after = next,
                None => return Ok(deleted),
            }
            tokio::time::sleep(between).await;
        }
    }

    /// Prunes every minute, in steps so that a large backlog of old
    /// requests never holds the writer for long.
    async fn prune_loop(&self, stop: CancellationToken) {
        loop {
            tokio::select! {
                pruned = self.prune_pass(Duration::from_millis(100)) => {
                    if let Err(e) = pruned {
                        tracing::warn!(error = %e, "pruning sent requests failed");
                    }
                }
                _ = stop.cancelled() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}
