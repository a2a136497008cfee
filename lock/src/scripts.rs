//! The Lua scripts, each next to a note on what it guarantees. `redis::Script` sends them by
//! EVALSHA and loads them on NOSCRIPT, so a restarted Redis needs no special handling.
//!
//! Every script that touches a lock first compares the stored token with the caller's: a
//! holder can only ever release, extend or hand off its *own* lock.

use redis::Script;
use std::sync::LazyLock;

/// Issues the next fence for a resource and reserves the `reserve - 1` fences after it for the
/// holder's process (it passes the lock on to its own waiters with them, without a round trip:
/// `Hold::pass_on` in `hold.rs`). The counter stores the last fence reserved, with an expiry
/// of the lock's TTL plus 60 s, so Redis keeps one counter per *live* lock, not one per resource
/// ever locked.
///
/// A fence is the server's time in µs followed by three decimal digits, a sequence within that
/// µs: `fence = max(last + 1, now_us × 1000)`. Lua's numbers are doubles, exact only below
/// 2^53, so the two parts are kept apart and joined as text (`string.format('%.0f%03d', ..)`),
/// and compared as text (`fence_below`); in Rust a fence is a `u64` (≈ 1.8 × 10^18 in 2026,
/// below `i64::MAX` until the year 2262), where adding to it is the same carry as here.
///
/// **Why fences never go backwards** although counters expire, Redis may restart empty
/// (FLUSHALL, no persistence, a failover to a replica that lacks the counter) and a quorum's
/// majority may change. Each script run issues or reserves at most `MAX_LOCAL_HANDOFFS_LIMIT +
/// 1` = 65 fences, and one Redis server runs fewer than 1000 / 65 ≈ 15 scripts per µs (a script
/// call takes a few µs; measured here: ~40 000 pipelined calls/s, about 25 µs each, by the
/// `fence_rate` test below). So a counter never gets ahead of its server's clock: when the
/// next script runs, `now_us × 1000` is already above the last fence reserved, and a counter
/// that is gone (expired, flushed, lost with its node) is rebuilt from a later clock reading
/// that exceeds every fence issued or reserved before.
///
/// **The clock assumption** that this rests on: a server's clock does not step back, and in
/// quorum mode the nodes' clocks differ by less than a counter outlives its last lock (60 s) —
/// NTP's slewing keeps both. A step *forward* only makes fences jump ahead (harmless). A step
/// back by `D` is absorbed by `last + 1` while the counter lives; it lives 60 s past the last
/// hold, so a step back of less than that is still safe. In quorum mode the fence is the
/// highest a majority issued, written back to a majority (`settle_fence`); if that node's
/// clock was the fastest and its counter is gone, the others issue from their own clocks,
/// which are behind by less than the 60 s the counters outlived the lock by. One case that
/// argument does not cover: a node of the settling majority loses its data *and* the other
/// is cut off, within the clock skew of the last fence — the next majority then issues from
/// clocks up to that skew behind. Keep node clocks within milliseconds (NTP), or restart a
/// node that lost its data only after the longest TTL (Redlock's delayed restart), and that
/// window is closed.
///
/// (Before, a fence was `max(last + 1, now_us)`: at more than 10^6 / 65 ≈ 15 000 round trips a
/// second on one key the counter outran the clock, and after a restart fences went backwards.)
const NEXT_FENCE: &str = r"
local function fence_text(us, seq)
  return string.format('%.0f%03d', us + math.floor(seq / 1000), seq % 1000)
end
local function next_fence(fence_key, ttl_ms, reserve)
  local now = redis.call('TIME')
  local us = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local seq = 0
  local last = redis.call('GET', fence_key)
  if last and #last > 3 then
    local last_us = tonumber(string.sub(last, 1, -4))
    if last_us >= us then
      us, seq = last_us, tonumber(string.sub(last, -3)) + 1
    end
  end
  local reserved = fence_text(us, seq + tonumber(reserve) - 1)
  redis.call('SET', fence_key, reserved, 'PX', tonumber(ttl_ms) + 60000)
  return fence_text(us, seq)
end
";

/// Whether fence `a` is below fence `b`, both decimal text without leading zeros (exact at
/// any size, unlike Lua's doubles).
const FENCE_BELOW: &str = r"
local function fence_below(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
";

/// The error a take script answers when the lock already holds the token it was called with:
/// the call ran before — it is a resend (redis-rs's cluster client resends a command after a
/// dropped connection, invisibly to the caller). The round then counts the node's outcome as
/// unknown and undoes it, instead of reading "busy" or "not ours" and leaving the lock held
/// under a token nobody uses until its TTL.
pub(crate) const RESENT: &str = "FENCELOCK_RESENT";

/// KEYS: lock, fence. ARGV: token, ttl_ms, reserve (fences for the holder, ≥ 1).
/// Returns the new fence (> 0, as text: see `NEXT_FENCE`) when the lock was free, else minus the remaining TTL in ms
/// (0 when the holder set no expiry), so a waiter knows when to look again at the latest; the
/// [`RESENT`] error when the lock already holds this token.
pub(crate) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NEXT_FENCE}
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return next_fence(KEYS[2], ARGV[2], ARGV[3])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.error_reply('{RESENT} the lock already holds this token')
end
return -math.max(redis.call('PTTL', KEYS[1]), 0)"
    ))
});

/// KEYS: lock, fence, queue, leases, tickets. ARGV: waiter id, ttl_ms, waiter lease ms, token.
///
/// Fair (FIFO) acquisition. Waiters queue by arrival ticket; each keeps a lease that it renews on
/// every attempt. Dead waiters are dropped from the head once their lease runs out, which bounds
/// how long a crashed waiter can stall the queue. The lock goes only to the head of the queue (or
/// to anyone when nobody queues). The waiter id is the place in the queue, kept across
/// attempts; the token owns the lock and is fresh for every attempt. Returns like ACQUIRE
/// ([`RESENT`] included, checked before the queue is touched).
pub(crate) static FAIR_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NEXT_FENCE}
if redis.call('GET', KEYS[1]) == ARGV[4] then
  return redis.error_reply('{RESENT} the lock already holds this token')
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local me, lease = ARGV[1], tonumber(ARGV[3])
while true do
  local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  if not head or head == me then break end
  local expires = tonumber(redis.call('HGET', KEYS[4], head) or '0')
  if expires > now_ms then break end
  redis.call('ZREM', KEYS[3], head)
  redis.call('HDEL', KEYS[4], head)
end
local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
if (not head or head == me) and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[2])
  redis.call('ZREM', KEYS[3], me)
  redis.call('HDEL', KEYS[4], me)
  return next_fence(KEYS[2], ARGV[2], 1)
end
if not redis.call('ZSCORE', KEYS[3], me) then
  redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[5]), me)
end
redis.call('HSET', KEYS[4], me, now_ms + lease)
for i = 3, 5 do redis.call('PEXPIRE', KEYS[i], lease * 4) end
return -math.max(redis.call('PTTL', KEYS[1]), 0)"
    ))
});

/// KEYS: lock, queue, leases, tickets. ARGV: token, waiter id, waiter lease ms.
/// A fair waiter won the lock but too late (its round used up the validity): it gives the lock
/// back and, in the same step, takes its place at the head of the queue again — so nobody who
/// queued after it can slip in between. It renews the queue's keys like `FAIR_ACQUIRE`, the
/// ticket counter included: were that to expire while others queue, newcomers would draw
/// tickets from 1 again, ahead of everyone.
pub(crate) static FAIR_GIVE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local lease = tonumber(ARGV[3])
local head = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local score = 0
if head[2] then score = tonumber(head[2]) - 1 end
redis.call('ZADD', KEYS[2], score, ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], now_ms + lease)
for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], lease * 4) end
return 1",
    )
});

/// KEYS: queue, leases. ARGV: waiter token, channel.
/// A fair waiter gives up: leave the queue and wake the others, one of whom may now be head.
pub(crate) static FAIR_LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('PUBLISH', ARGV[2], 'left')
end
return 1",
    )
});

/// KEYS: lock. ARGV: token, keep_ms, channel, releasing locker's id.
/// Releases the caller's own lock and announces it on the channel, signed with the locker's id
/// (unless the channel is empty: undoing a failed quorum attempt wakes nobody, the other
/// contenders are retrying already).
/// With `keep_ms > 0` (the `min_hold` has not passed yet) the key stays, owned by nobody (its
/// value is no longer any holder's token, so an extension still in flight cannot re-arm it),
/// and just expires then; waiters' timers are set to that expiry. Returns 1 if the lock was the
/// caller's, else 0.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local keep = tonumber(ARGV[2])
if keep > 0 then
  redis.call('SET', KEYS[1], 'released:min_hold', 'PX', keep)
else
  redis.call('DEL', KEYS[1])
  if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
end
return 1",
    )
});

/// KEYS: lock, fence. ARGV: token, ttl_ms. Makes the caller's own lock live at least `ttl_ms`
/// from now; never shortens it, so a watchdog's extension cannot undo a longer one made by hand
/// (and a guard's validity, which only ever advances, stays true). The fence counter is kept
/// alive as long as the lock plus 60 s, as when it was issued (see `NEXT_FENCE`), however long
/// the lock is held. Returns 1 or 0. A yes always writes (the owner's token again, its TTL
/// kept), even when nothing needed changing: `WAIT` (`LockerConfig::wait_replicas`) counts the
/// writes of the connection it runs on, and must count this one.
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ttl = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
if redis.call('PTTL', KEYS[2]) < ttl + 60000 then
  redis.call('PEXPIRE', KEYS[2], ttl + 60000)
end
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
return 1",
    )
});

/// KEYS: lock. ARGV: token. Whether the token still owns the lock: 1 or 0. Changes nothing.
/// Confirms a lock passed on in-process without a round trip (`confirm_passed_on` in
/// `guard.rs`): as small as a script can be, since it runs once per pass-on.
pub(crate) static CONFIRM: LazyLock<Script> = LazyLock::new(|| {
    Script::new("if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end return 0")
});

/// KEYS: lock, fence. Returns `{PTTL of the lock, last fence issued or reserved, holder}`: PTTL
/// -2 when the resource is free, -1 when its key has no expiry; fence (as text) 0 when no
/// counter lives;
/// the holder as the SHA-1 of the lock's value ('' when free) — enough for `FORCE_UNLOCK` to
/// evict exactly that holder, without revealing the token (the holder's secret).
pub(crate) static INSPECT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local value = redis.call('GET', KEYS[1])
local holder = ''
if value then holder = redis.sha1hex(value) end
return {redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[2]) or '0', holder}",
    )
});

/// KEYS: lock. ARGV: holder (SHA-1 of the lock's value, from `INSPECT`), channel, locker id.
/// An operator's override: deletes the lock if it is still the holder's that was inspected,
/// and wakes the waiters. Checking the holder makes it safe to repeat and to arrive late: it
/// never deletes a lock taken after the inspection. The fence counter stays, so the next
/// holder's fence is still above the evicted holder's and fenced storage rejects the evicted
/// holder's late writes. Returns 1 when it deleted the lock.
pub(crate) static FORCE_UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local value = redis.call('GET', KEYS[1])
if not value or redis.sha1hex(value) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1",
    )
});

/// KEYS: lock, fence. ARGV: old token, new token, ttl_ms, reserve.
/// Hands the caller's lock straight to a waiter in the same process: one round trip instead of
/// a release, a wake-up and an acquire. The lock never becomes free, the new holder gets its own
/// token, full TTL and a fresh fence. Returns the fence (as text), or 0 when the old token no
/// longer owns the lock (the [`RESENT`] error when the new one does already).
pub(crate) static HANDOFF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NEXT_FENCE}
local holder = redis.call('GET', KEYS[1])
if holder ~= ARGV[1] then
  if holder == ARGV[2] then
    return redis.error_reply('{RESENT} the lock already holds the new token')
  end
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return next_fence(KEYS[2], ARGV[3], ARGV[4])"
    ))
});

/// KEYS: fence. ARGV: fence, ttl_ms.
/// Quorum mode: raises a node's counter to the last fence the holder reserved (the highest any
/// node of its majority issued, plus the reserve), so any later majority, which shares a node
/// with this one, issues more.
/// The counter expires like one `NEXT_FENCE` wrote. Fences are compared as text (exact). A
/// counter already high enough is written again as it is (for `WAIT`, as in `EXTEND`).
pub(crate) static RAISE_FENCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{FENCE_BELOW}
local current = redis.call('GET', KEYS[1])
if fence_below(current or '0', ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]) + 60000)
else
  redis.call('SET', KEYS[1], current, 'KEEPTTL')
end
return 1"
    ))
});

/// Every script, for loading them onto a connection as soon as it is made: the first use of a
/// script (on a new or restarted Redis) then costs no NOSCRIPT round trips in the middle of a
/// round, where they would eat the lock's validity.
pub(crate) fn all() -> [&'static Script; 11] {
    [
        &ACQUIRE,
        &CONFIRM,
        &FAIR_ACQUIRE,
        &FAIR_GIVE_BACK,
        &FAIR_LEAVE,
        &RELEASE,
        &EXTEND,
        &HANDOFF,
        &RAISE_FENCE,
        &INSPECT,
        &FORCE_UNLOCK,
    ]
}

#[cfg(test)]
mod fence_rate {
    //! The fence counter against the server clock at Redis's own top rate: pipelined `HANDOFF`s
    //! on one key, each reserving the largest block the crate allows, as fast as the server
    //! runs them (no client is faster). Then the node loses its data; the next fence must still
    //! be above every fence handed out or reserved before.

    use super::*;
    use crate::options::MAX_LOCAL_HANDOFFS_LIMIT;
    use fencelock_testkit::RedisServer;
    use std::time::{Duration, Instant};

    /// Each batch of pipelined calls; the run lasts [`HOT_FOR`].
    const BATCH: usize = 2_000;
    const HOT_FOR: Duration = Duration::from_secs(2);

    async fn handoff_fence(conn: &mut redis::aio::MultiplexedConnection, reserve: u64) -> u64 {
        HANDOFF
            .key("lock")
            .key("fence")
            .arg("token")
            .arg("token")
            .arg(5_000)
            .arg(reserve)
            .invoke_async(conn)
            .await
            .unwrap()
    }

    async fn set(conn: &mut redis::aio::MultiplexedConnection, key: &str, value: &str) {
        let () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query_async(conn)
            .await
            .unwrap();
    }

    async fn get(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query_async(conn).await.unwrap()
    }

    /// The branches the top-rate run never reaches (there the clock is always ahead): a counter
    /// ahead of the clock continues from itself, carrying at 999; old-format (plain µs) and
    /// short counters are below any new fence; `RAISE_FENCE` compares across lengths exactly.
    #[tokio::test]
    async fn counter_arithmetic_at_its_edges() {
        let redis = RedisServer::start();
        let client = redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        set(&mut conn, "lock", "token").await;
        let now_fence = handoff_fence(&mut conn, 1).await;

        // A counter 10 s ahead, at sequence 990: the next fence is the next number, and a
        // block of 65 carries into the next µs.
        let ahead = (now_fence / 1000 + 10_000_000) * 1000 + 990;
        set(&mut conn, "fence", &ahead.to_string()).await;
        let fence = handoff_fence(&mut conn, 65).await;
        assert_eq!(fence, ahead + 1);
        let stored: u64 = get(&mut conn, "fence").await.unwrap().parse().unwrap();
        assert_eq!(stored, ahead + 65, "the reserved block's end, carried");
        set(&mut conn, "fence", &format!("{}999", ahead / 1000)).await;
        assert_eq!(handoff_fence(&mut conn, 1).await, (ahead / 1000 + 1) * 1000);

        // An old-format counter (µs, 16 digits) and short ones: the clock decides.
        for old in ["1796437765498972", "0", "7", "999", "1000"] {
            set(&mut conn, "fence", old).await;
            let fence = handoff_fence(&mut conn, 1).await;
            assert!(
                fence > now_fence && fence > old.parse::<u64>().unwrap(),
                "{old}: {fence}"
            );
        }

        // RAISE_FENCE never lowers, and compares numbers of different lengths as numbers.
        for (current, raised_to, expected) in [
            ("999", "1796437765498972000", "1796437765498972000"),
            ("1796437765498972000", "999", "1796437765498972000"),
            (
                "1796437765498972000",
                "1796437765498972001",
                "1796437765498972001",
            ),
            (
                "1796437765498972001",
                "1796437765498972000",
                "1796437765498972001",
            ),
            ("9", "10", "10"),
        ] {
            set(&mut conn, "fence", current).await;
            let _: i64 = RAISE_FENCE
                .key("fence")
                .arg(raised_to)
                .arg(1000)
                .invoke_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(get(&mut conn, "fence").await.as_deref(), Some(expected));
        }
    }

    #[tokio::test]
    async fn fences_keep_rising_after_flushall_at_the_servers_top_rate() {
        let redis = RedisServer::start();
        let client = redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let reserve = u64::from(MAX_LOCAL_HANDOFFS_LIMIT) + 1;
        set(&mut conn, "lock", "token").await;
        HANDOFF
            .prepare_invoke()
            .load_async(&mut conn)
            .await
            .unwrap();
        let started = Instant::now();
        let mut calls = 0;
        let mut highest = 0;
        while started.elapsed() < HOT_FOR {
            let mut pipe = redis::pipe();
            for _ in 0..BATCH {
                pipe.cmd("EVALSHA")
                    .arg(HANDOFF.get_hash())
                    .arg(2)
                    .arg("lock")
                    .arg("fence")
                    .arg("token")
                    .arg("token")
                    .arg(5_000)
                    .arg(reserve);
            }
            let fences: Vec<u64> = pipe.query_async(&mut conn).await.unwrap();
            assert!(fences.windows(2).all(|pair| pair[0] < pair[1]));
            highest = highest.max(fences.last().copied().unwrap_or(0) + reserve - 1);
            calls += BATCH;
        }
        eprintln!(
            "{calls} HANDOFFs in {:?} ({:.0}/s), {reserve} fences each",
            started.elapsed(),
            calls as f64 / started.elapsed().as_secs_f64()
        );
        let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
        set(&mut conn, "lock", "token").await;
        let after = handoff_fence(&mut conn, 1).await;
        assert!(
            after > highest,
            "after FLUSHALL the next fence {after} is not above {highest}, reserved before \
             (the counter ran {} ahead)",
            highest - after
        );
    }

    /// The master's replication offset (what its writes have streamed to replicas so far).
    async fn replication_offset(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(conn)
            .await
            .unwrap();
        info.lines()
            .find_map(|line| line.strip_prefix("master_repl_offset:"))
            .and_then(|offset| offset.trim().parse().ok())
            .expect("master_repl_offset in INFO replication")
    }

    /// Found in review of `wait_replicas`: a script that answers "done" (1) must have written
    /// something, because `WAIT` counts only writes. An `EXTEND` that needed no change (the key
    /// lived long enough) and a `RAISE_FENCE` below the counter wrote nothing, so a `WAIT` after
    /// them, on a connection whose older writes a replica had acknowledged, answered at once:
    /// an extension or a fence no replica had seen was relied upon. Each now always reaches the
    /// replication stream.
    #[tokio::test]
    async fn every_yes_of_extend_and_raise_fence_reaches_the_replicas() {
        let master = RedisServer::start_master();
        let _replica = RedisServer::start_replica_of(&master);
        let client = redis::Client::open(master.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let () = redis::cmd("SET")
            .arg("lock")
            .arg("token")
            .arg("PX")
            .arg(60_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        set(&mut conn, "fence", "900000000000000000").await;
        let () = redis::cmd("PEXPIRE")
            .arg("fence")
            .arg(600_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        let before = replication_offset(&mut conn).await;
        let extended: i64 = EXTEND
            .key("lock")
            .key("fence")
            .arg("token")
            .arg(10_000)
            .invoke_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(extended, 1);
        let after_extend = replication_offset(&mut conn).await;
        assert!(
            after_extend > before,
            "an EXTEND that answered 1 wrote nothing a replica would see"
        );
        let raised: i64 = RAISE_FENCE
            .key("fence")
            .arg("5")
            .arg(10_000)
            .invoke_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(raised, 1);
        assert!(
            replication_offset(&mut conn).await > after_extend,
            "a RAISE_FENCE that answered 1 wrote nothing a replica would see"
        );
        // Neither changed what it had no reason to change.
        let pttl: i64 = redis::cmd("PTTL")
            .arg("lock")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(pttl > 50_000, "{pttl}");
        assert_eq!(
            get(&mut conn, "fence").await.as_deref(),
            Some("900000000000000000")
        );
    }

    /// Preparing the Redis Cluster target (issue 21), whose client resends a command after a
    /// dropped connection: a take script run a second time with the same token says so with
    /// the `RESENT` error (the round then undoes it), instead of "busy" (ACQUIRE), "not ours"
    /// (HANDOFF) or re-queueing the waiter (FAIR_ACQUIRE). Other callers' answers are as
    /// before.
    #[tokio::test]
    async fn a_take_script_run_again_with_its_token_says_it_was_resent() {
        let redis = RedisServer::start();
        let client = redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let acquire = |token: &'static str| {
            let mut invocation = ACQUIRE.key("a:lock");
            invocation.key("a:fence").arg(token).arg(5_000).arg(1);
            invocation
        };
        let first: i64 = acquire("t1").invoke_async(&mut conn).await.unwrap();
        assert!(first > 0);
        let again = acquire("t1").invoke_async::<i64>(&mut conn).await;
        assert!(
            again
                .as_ref()
                .is_err_and(|err| err.to_string().contains(RESENT)),
            "{again:?}"
        );
        let other: i64 = acquire("t2").invoke_async(&mut conn).await.unwrap();
        assert!(other < 0, "busy for another token: {other}");

        let handoff = || {
            let mut invocation = HANDOFF.key("a:lock");
            invocation
                .key("a:fence")
                .arg("t1")
                .arg("t3")
                .arg(5_000)
                .arg(1);
            invocation
        };
        let handed: i64 = handoff().invoke_async(&mut conn).await.unwrap();
        assert!(handed > first);
        let again = handoff().invoke_async::<i64>(&mut conn).await;
        assert!(
            again
                .as_ref()
                .is_err_and(|err| err.to_string().contains(RESENT)),
            "{again:?}"
        );
        let stranger: i64 = HANDOFF
            .key("a:lock")
            .key("a:fence")
            .arg("t8")
            .arg("t9")
            .arg(5_000)
            .arg(1)
            .invoke_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(stranger, 0, "not ours for a stranger");

        let fair = || {
            let mut invocation = FAIR_ACQUIRE.key("f:lock");
            invocation
                .key("f:fence")
                .key("f:queue")
                .key("f:leases")
                .key("f:tickets")
                .arg("waiter")
                .arg(5_000)
                .arg(2_000)
                .arg("t5");
            invocation
        };
        let taken: i64 = fair().invoke_async(&mut conn).await.unwrap();
        assert!(taken > 0);
        let again = fair().invoke_async::<i64>(&mut conn).await;
        assert!(
            again
                .as_ref()
                .is_err_and(|err| err.to_string().contains(RESENT)),
            "{again:?}"
        );
        let queued: i64 = redis::cmd("ZCARD")
            .arg("f:queue")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(queued, 0, "the resent call did not queue the waiter again");
    }
}
