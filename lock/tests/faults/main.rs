//! One test per defect found in the runtime under faults (see the commit that fixed each),
//! grouped by the class of defect it pins, one module per class (its doc comment says what
//! went wrong there):
//! - `cancellation`: futures dropped or cut short mid-operation;
//! - `late_commands`: commands that run after their caller gave up on them;
//! - `slow_replies`: slow replies that are still answers;
//! - `hung_nodes`: one node of a quorum hung (SIGSTOP);
//! - `lost_locks`: when a holder is told its lock is lost;
//! - `leftovers`: what a finished lock leaves in Redis.
//!
//! Real redis-server processes, `CLIENT PAUSE` (commands queue, then run), SIGSTOP (a hung
//! node), a fault proxy (slow replies) and MONITOR; nothing is mocked. Each test starts its
//! own servers: pausing a shared one would stall the other tests. The helpers are in
//! `common/` (`nodes`: servers and lockers; `faults`: pauses, foreign holders, what a node
//! still holds or was sent).

#[path = "../common/mod.rs"]
mod common;

mod cancellation;
mod hung_nodes;
mod late_commands;
mod leftovers;
mod lost_locks;
mod slow_replies;
