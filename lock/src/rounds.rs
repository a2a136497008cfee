//! The node-level rounds: one script sent to every node at once and the answers tallied against
//! the majority ([`crate::quorum`] holds every threshold). Acquire and handoff are *take* rounds
//! with one tail — won a majority → settle the fence, else undo; release and extend are yes/no
//! rounds. Knows nothing of guards, waiters or lockers.
//!
//! Every round stops as soon as its outcome is known (a majority said yes, or refusals make
//! that impossible; a take round also on a split vote: `quorum::Tally`), then gives the other
//! nodes only as long again as the deciding answers took (+1 ms) before it stops waiting for
//! them. Errors and silence never end a round early, since they decide between "busy" and
//! "unavailable". Verdicts come from `quorum::vote_result`: a yes/no round says "refused" only
//! when the refusals alone rule out a majority, never because a yes came late. A node that
//! answers nothing in time is suspected hung and skipped by later rounds until a probe gets
//! through (see `node.rs`), so a hung minority costs (almost) nothing; a release still reaches
//! it from the background.
//!
//! Cancel safety: a take round records the connection each call went out on. Whatever may have
//! taken a lock and is not part of a grant — a node that issued in a lost round, a node whose
//! answer never came, every node of a round whose future was dropped — gets the round's undo
//! sent *on that same connection*, so it runs after the call it undoes, whenever that runs.
//! The undo calls are built only when something must be given back.

use crate::error::NodeError;
use crate::node::{Call, Node, Retry, SentOn};
use crate::quorum::{self, validity, TakeResult, Tally, Vote, VoteResult};
use crate::resource::ResourceKeys;
use crate::scripts;
use futures_util::stream::{FuturesUnordered, StreamExt};
use redis::FromRedisValue;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The Redis nodes of one locker.
#[derive(Debug)]
pub(crate) struct Cluster {
    nodes: Vec<Arc<Node>>,
    /// `0..nodes.len()`: the usual set of nodes a round asks.
    all: Vec<usize>,
    node_timeout: Duration,
}

/// What a won take round (or a handoff) produced.
#[derive(Debug)]
pub(crate) struct Grant {
    pub token: String,
    pub fence: u64,
    /// The last fence reserved for this holder's process (`fence` itself when none were): the
    /// fences after `fence` up to this one are passed on with the lock to local waiters.
    pub fence_limit: u64,
    /// When the winning round returned: from here on the lock is certainly held. (Validity is
    /// reckoned from the round's *start*, the conservative end for expiry.)
    pub acquired_at: Instant,
    pub valid_until: Instant,
}

/// What a take round asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Terms {
    /// How long the lock lives.
    pub ttl: Duration,
    /// How many fences it takes: the holder's and those its process may pass on (≥ 1).
    pub reserve: u64,
    /// Stop waiting on a split vote (see `quorum::Tally`): right for an acquisition, which a
    /// retry decides a few milliseconds later; wrong for a handoff, where "no" only means a
    /// node never had the lock, and a late yes makes the majority.
    pub stop_on_split: bool,
    /// A handoff: the nodes the call never reached (skipped as suspect, no connection) may
    /// still hold the old lock, so the undo is resent to them from the background until they
    /// answer or this instant passes (the old lock has expired by then).
    pub undo_unsent_until: Option<Instant>,
    /// How many replicas must acknowledge what the round writes (the lock, the settled
    /// fence), and within how long (`LockerConfig::wait_replicas`).
    pub replica_ack: (u32, Duration),
}

/// Why a take round did not produce a grant.
#[derive(Debug)]
pub(crate) struct NotTaken {
    /// The shortest remaining TTL a refusing node reported, if any.
    pub retry_after: Option<Duration>,
    /// How the vote ended — the one verdict of a take round ([`TakeResult::Won`] when a
    /// majority issued but the fence could not be settled or the validity was used up;
    /// [`TakeResult::Split`] with `won_some` when nodes that issued were given back).
    pub result: TakeResult,
    /// What the failing and silent nodes said (empty when all answered).
    pub errors: Vec<NodeError>,
}

/// How a yes/no round came out.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// A majority said yes.
    Confirmed,
    /// The refusals alone rule out a majority: the lock is not held under this token.
    Refused,
    /// Neither: too few answered yes or no to tell (the errors, silent nodes included). The
    /// lock may still be held by a majority; retry while its validity lasts.
    Undecided(Vec<NodeError>),
}

/// One node's part in a round.
#[derive(Debug)]
enum Answer {
    /// No answer (yet): the call may or may not have run.
    Pending,
    /// A positive reply: a fence issued, or "yes".
    Yes(u64),
    /// Zero or negative: "no", with the holder's remaining TTL when the script said.
    No(Option<Duration>),
    Failed(NodeError),
}

impl Answer {
    fn vote(&self) -> Option<Vote> {
        match self {
            Answer::Pending => None,
            Answer::Yes(_) => Some(Vote::Yes),
            Answer::No(_) => Some(Vote::No),
            Answer::Failed(_) => Some(Vote::Failed),
        }
    }

    fn from_reply(reply: Result<i64, NodeError>) -> Answer {
        match reply {
            Ok(value) if value > 0 => Answer::Yes(value.unsigned_abs()),
            Ok(minus_ttl) => {
                Answer::No((minus_ttl < 0).then(|| Duration::from_millis(minus_ttl.unsigned_abs())))
            }
            Err(err) => Answer::Failed(err),
        }
    }
}

/// The answers of one round, by node.
#[derive(Debug)]
struct Answers(Vec<Answer>);

impl Answers {
    fn yes(&self) -> usize {
        self.0
            .iter()
            .filter(|a| matches!(a, Answer::Yes(_)))
            .count()
    }

    fn no(&self) -> usize {
        self.0.iter().filter(|a| matches!(a, Answer::No(_))).count()
    }

    fn errors(&self) -> Vec<NodeError> {
        self.0
            .iter()
            .filter_map(|a| match a {
                Answer::Failed(err) => Some(err.clone()),
                _ => None,
            })
            .collect()
    }
}

/// A builder of a round's undo calls: called only when something must be given back, so the
/// common round (won, or refused outright) allocates none of them.
pub(crate) type Undo<'a> = &'a (dyn Fn() -> Vec<Call> + Sync);

/// How a take round gives back what it took but does not keep — named, because the two are
/// easy to confuse and differ for a fair waiter (which keeps its place in the queue only when
/// it knows it lost).
#[derive(Clone, Copy)]
pub(crate) struct GiveBack<'a> {
    /// For nodes whose outcome is unknown (sent behind the call, on its connection), and every
    /// node of a round whose future was dropped.
    pub unknown: Undo<'a>,
    /// For nodes that issued in a round that was lost (they answered: any connection will do).
    pub lost: Undo<'a>,
}

/// A fresh round over `count` nodes: no connection recorded, no answer yet.
fn fresh_round(count: usize) -> (Vec<Arc<SentOn>>, Answers) {
    (
        (0..count).map(|_| Arc::new(SentOn::default())).collect(),
        Answers((0..count).map(|_| Answer::Pending).collect()),
    )
}

/// Sends the round's undo on every connection a call went out on, if the round is dropped
/// before it settled (a cancelled acquire or handoff).
struct UndoOnDrop<'a> {
    cluster: &'a Cluster,
    sent_on: &'a [Arc<SentOn>],
    undo: Undo<'a>,
    /// After this the lock the round may have taken has expired.
    until: Instant,
    armed: bool,
}

impl Drop for UndoOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut calls = None;
        for (node, sent_on) in self.cluster.nodes.iter().zip(self.sent_on) {
            if let Some(conn) = sent_on.give_up() {
                let calls = calls.get_or_insert_with(|| (self.undo)());
                node.follow_up(Some(conn), calls.clone(), self.until);
            }
        }
    }
}

impl Cluster {
    pub(crate) fn new(nodes: Vec<Node>, node_timeout: Duration) -> Cluster {
        Cluster {
            all: (0..nodes.len()).collect(),
            nodes: nodes.into_iter().map(Arc::new).collect(),
            node_timeout,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn nodes(&self) -> &[Arc<Node>] {
        &self.nodes
    }

    /// Per-node budget for one call: the configured node timeout, and in quorum mode at most a
    /// tenth of the TTL, so that slow nodes cannot use up the validity of the lock.
    pub(crate) fn call_timeout(&self, ttl: Duration) -> Duration {
        if self.nodes.len() == 1 {
            self.node_timeout
        } else {
            self.node_timeout.min(ttl / 10)
        }
    }

    /// Sends `call` to the nodes in `to` at once and records their answers until the round's
    /// stopping rule ([`Tally`]: `yes_needed` yes-answers, or too few possible, or for a take
    /// round a split) says so, plus a short grace for the rest.
    #[allow(clippy::too_many_arguments)]
    async fn gather(
        &self,
        call: &Call,
        to: &[usize],
        timeout: Duration,
        sent_on: &[Arc<SentOn>],
        answers: &mut Answers,
        yes_needed: usize,
        split_grace: bool,
    ) {
        let started = Instant::now();
        let mut calls: FuturesUnordered<_> = to
            .iter()
            .inspect(|&&node| self.nodes[node].probe_if_due())
            .map(|&node| async move {
                let reply = self.nodes[node]
                    .run_recorded::<i64>(call, timeout, &sent_on[node])
                    .await;
                (node, reply)
            })
            .collect();
        let mut tally = Tally::new(to.len(), yes_needed, split_grace);
        let mut grace_until: Option<Instant> = None;
        loop {
            let next = match grace_until {
                None => calls.next().await,
                Some(until) => match tokio::time::timeout_at(until, calls.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
            };
            let Some((node, reply)) = next else { break };
            answers.0[node] = Answer::from_reply(reply);
            let vote = answers.0[node].vote().expect("an answer was just recorded");
            if tally.record(vote) && grace_until.is_none() {
                let now = Instant::now();
                grace_until = Some(now + (now - started) + Duration::from_millis(1));
            }
        }
    }

    /// A take round: `call` issues a fence on every node where it takes the lock for `token`.
    /// Won on a majority whose fence could be settled and whose validity is not used up;
    /// otherwise what it took goes back: `give_back.lost` runs on the nodes that issued,
    /// `give_back.unknown` on those whose outcome is unknown (and on every node if the round is
    /// dropped).
    pub(crate) async fn take(
        &self,
        keys: &ResourceKeys,
        call: &Call,
        token: &str,
        give_back: GiveBack<'_>,
        terms: Terms,
    ) -> Result<Grant, NotTaken> {
        let Terms {
            ttl,
            reserve,
            stop_on_split,
            undo_unsent_until,
            replica_ack,
        } = terms;
        let count = self.nodes.len();
        let (sent_on, mut answers) = fresh_round(count);
        // What a round takes lives at most its TTL (plus drift) from now.
        let lock_gone_by = Instant::now() + ttl + quorum::drift(ttl) + self.node_timeout;
        let mut undo_on_drop = UndoOnDrop {
            cluster: self,
            sent_on: &sent_on,
            undo: give_back.unknown,
            until: lock_gone_by,
            armed: true,
        };
        let timeout = self.call_timeout(ttl);
        let started = Instant::now();
        self.gather(
            call,
            &self.all,
            timeout,
            &sent_on,
            &mut answers,
            quorum::majority(count),
            stop_on_split,
        )
        .await;
        let mut grant = None;
        if quorum::is_majority(answers.yes(), count) {
            if let Some(fence) = self
                .settle_fence(keys, &answers, timeout, ttl, reserve, replica_ack)
                .await
            {
                if let Some(valid_for) = validity(ttl, started.elapsed()) {
                    let now = Instant::now();
                    grant = Some(Grant {
                        token: token.to_string(),
                        fence,
                        fence_limit: fence + reserve - 1,
                        acquired_at: now,
                        valid_until: now + valid_for,
                    });
                }
            }
        }
        // Give back what is not part of the grant: nodes that issued in a lost round (at once,
        // so that our own leftovers cannot refuse our next attempt), and every node whose
        // outcome is unknown (behind the call, on its connection).
        let mut issued = Vec::new();
        let mut calls = None;
        // (The connections of the nodes that issued stay recorded until the give-back is done:
        // if this future is dropped meanwhile, the guard undoes them.)
        for (node, answer) in answers.0.iter().enumerate() {
            match answer {
                Answer::Yes(_) if grant.is_none() => issued.push(node),
                Answer::Pending | Answer::Failed(_) => {
                    let conn = sent_on[node].give_up();
                    if conn.is_some() {
                        let calls = calls.get_or_insert_with(give_back.unknown);
                        self.nodes[node].follow_up(conn, calls.clone(), lock_gone_by);
                    } else if let Some(until) = undo_unsent_until {
                        let calls = calls.get_or_insert_with(give_back.unknown);
                        self.nodes[node].follow_up(None, calls.clone(), until);
                    }
                }
                _ => {}
            }
        }
        if !issued.is_empty() {
            // What goes unanswered is resent as the plain token-checked undo, never as the
            // give-back itself: a fair waiter's give-back re-queues it, which must not happen
            // again later, when the waiter may have moved on.
            let resend = [undo_call(keys, token)];
            self.undo_on(&issued, &(give_back.lost)(), timeout, &resend, lock_gone_by)
                .await;
        }
        undo_on_drop.armed = false;
        if let Some(grant) = grant {
            return Ok(grant);
        }
        Err(NotTaken {
            retry_after: answers
                .0
                .iter()
                .filter_map(|a| match a {
                    Answer::No(ttl) => *ttl,
                    _ => None,
                })
                .min(),
            result: quorum::take_result(answers.yes(), answers.no(), count),
            errors: self.with_silent_nodes(&answers, timeout),
        })
    }

    /// The errors of a round, with the nodes that never answered counted as timed out.
    fn with_silent_nodes(&self, answers: &Answers, timeout: Duration) -> Vec<NodeError> {
        let mut errors = answers.errors();
        for (node, answer) in answers.0.iter().enumerate() {
            if matches!(answer, Answer::Pending) {
                errors.push(NodeError {
                    node,
                    address: self.nodes[node].address.clone(),
                    message: format!("no answer within {timeout:?}"),
                });
            }
        }
        errors.sort_by_key(|err| err.node);
        errors
    }

    /// Runs the undo on `nodes` (whose take call answered, so any connection will do). Where
    /// it goes unanswered (a suspect node skipped, no connection in time, no reply), `resend`
    /// is resent from the background until `until`, when what it undoes has expired anyway.
    async fn undo_on(
        &self,
        nodes: &[usize],
        undo: &[Call],
        timeout: Duration,
        resend: &[Call],
        until: Instant,
    ) {
        let undo_one = |node: usize| async move {
            for call in undo {
                if self.nodes[node].run::<i64>(call, timeout).await.is_err() {
                    self.nodes[node].follow_up(None, resend.to_vec(), until);
                    return;
                }
            }
        };
        futures_util::future::join_all(nodes.iter().map(|&node| undo_one(node))).await;
    }

    /// Quorum mode: the fence is the highest any node issued; the last fence reserved with it
    /// (`fence + reserve - 1`, which that node stores) is written back to the nodes that issued
    /// less or refused (best-effort to all of them). Once a majority of nodes store at least the
    /// reserved end, any later majority shares a node with it, and that node issues more — so
    /// fences strictly increase across holders. `None` if fewer than a majority could be
    /// brought up to it.
    async fn settle_fence(
        &self,
        keys: &ResourceKeys,
        answers: &Answers,
        timeout: Duration,
        ttl: Duration,
        reserve: u64,
        replica_ack: (u32, Duration),
    ) -> Option<u64> {
        let issued = |answer: &Answer| match answer {
            Answer::Yes(fence) => Some(*fence),
            _ => None,
        };
        let fence = answers.0.iter().filter_map(issued).max()?;
        let count = self.nodes.len();
        if count == 1 {
            return Some(fence);
        }
        let already = answers
            .0
            .iter()
            .filter(|a| issued(a) == Some(fence))
            .count();
        let behind: Vec<usize> = answers
            .0
            .iter()
            .enumerate()
            .filter(|(_, a)| matches!(a, Answer::No(_)) || issued(a).is_some_and(|f| f < fence))
            .map(|(node, _)| node)
            .collect();
        let needed = quorum::majority(count).saturating_sub(already);
        if needed == 0 && behind.is_empty() {
            return Some(fence);
        }
        let reserved = fence + reserve - 1;
        let (fence_arg, ttl_ms) = (reserved.to_string(), ttl.as_millis().to_string());
        let call = Call::new(
            &scripts::RAISE_FENCE,
            Retry::Safely,
            &[&keys.fence],
            &[&fence_arg, &ttl_ms],
        )
        .acknowledged_by(replica_ack);
        let (sent_on, mut raised) = fresh_round(count);
        self.gather(
            &call,
            &behind,
            timeout,
            &sent_on,
            &mut raised,
            needed.max(1),
            false,
        )
        .await;
        quorum::is_majority(already + raised.yes(), count).then_some(fence)
    }

    /// A yes/no round (release, extend), decided as soon as a majority agrees or no longer can.
    /// With `resend` (a release), every node that gave no yes-or-no — the call never reached it
    /// (still waiting for a connection), it was skipped as suspect, it failed, or it answered
    /// nothing — gets the call again from the background until it answers or `resend_until`
    /// (after which the key has expired anyway): a release must reach every node that may hold
    /// the lock. A node that got the call but did not answer is probed as well.
    pub(crate) async fn confirm(
        &self,
        call: &Call,
        timeout: Duration,
        resend: Option<(&(dyn Fn() -> Call + Sync), Instant)>,
    ) -> Verdict {
        let count = self.nodes.len();
        let (sent_on, mut answers) = fresh_round(count);
        self.gather(
            call,
            &self.all,
            timeout,
            &sent_on,
            &mut answers,
            quorum::majority(count),
            false,
        )
        .await;
        for (node, answer) in answers.0.iter().enumerate() {
            if matches!(answer, Answer::Yes(_) | Answer::No(_)) {
                continue;
            }
            let conn = sent_on[node].give_up();
            match resend {
                Some((call, until)) => self.nodes[node].follow_up(conn, vec![call()], until),
                None if matches!(answer, Answer::Pending) => {
                    self.nodes[node].follow_up(conn, Vec::new(), Instant::now());
                }
                None => {}
            }
        }
        match quorum::vote_result(answers.yes(), answers.no(), count) {
            VoteResult::Won => Verdict::Confirmed,
            VoteResult::Lost => Verdict::Refused,
            VoteResult::Pending => Verdict::Undecided(self.with_silent_nodes(&answers, timeout)),
        }
    }

    /// Runs `call` on every node at once, each bounded by the node timeout; the replies in node
    /// order. For operator calls (inspect, force-unlock), which decide on the replies
    /// themselves.
    pub(crate) async fn ask_all<T: FromRedisValue + Send + 'static>(
        &self,
        call: &Call,
    ) -> Vec<Result<T, NodeError>> {
        futures_util::future::join_all(
            self.nodes
                .iter()
                .map(|node| node.run::<T>(call, self.node_timeout)),
        )
        .await
    }

    /// Runs `call` on node `node` only, bounded by the node timeout.
    pub(crate) async fn ask_one<T: FromRedisValue + Send + 'static>(
        &self,
        node: usize,
        call: &Call,
    ) -> Result<T, NodeError> {
        self.nodes[node].run::<T>(call, self.node_timeout).await
    }

    /// PINGs every node; how many answered.
    pub(crate) async fn ping_all(&self) -> usize {
        futures_util::future::join_all(self.nodes.iter().map(|node| node.ping()))
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }
}

/// Gives back `token`'s lock without announcing it: used for attempts that did not win (the
/// other contenders are retrying already) and for ones whose outcome is unknown.
pub(crate) fn undo_call(keys: &ResourceKeys, token: &str) -> Call {
    release_call(keys, token, "0", None)
}

/// `RELEASE` of `token`'s lock, keeping the key `keep_ms` (min_hold), announced on the
/// resource's channel as released by locker `announce_as` — or silently (see `undo_call`).
/// A release, the resend of one and the undo of a handoff (the lock may have been ours:
/// waiters should hear it is free) are all this call.
pub(crate) fn release_call(
    keys: &ResourceKeys,
    token: &str,
    keep_ms: &str,
    announce_as: Option<&str>,
) -> Call {
    let (channel, locker) = match announce_as {
        Some(locker) => (keys.channel.clone(), locker.to_string()),
        None => (String::new(), String::new()),
    };
    Call::new(
        &scripts::RELEASE,
        Retry::NoMeansUnknown,
        &[&keys.lock],
        &[token, keep_ms, &channel, &locker],
    )
}
