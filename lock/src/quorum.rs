//! The one place that knows what a majority is and how long a lock stays valid.
//!
//! Every threshold a round uses is a function here; `rounds.rs` only counts answers.

use std::time::Duration;

/// Nodes that must agree: a strict majority (1 of 1 in single-node mode).
pub(crate) fn majority(nodes: usize) -> usize {
    nodes / 2 + 1
}

/// Whether `agreeing` nodes of `nodes` are a majority.
pub(crate) fn is_majority(agreeing: usize, nodes: usize) -> bool {
    agreeing >= majority(nodes)
}

/// How a vote stands (raft-rs's `VoteResult`): callers never combine predicates themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VoteResult {
    /// A majority said yes.
    Won,
    /// The refusals alone rule a majority out: even if every other node (not answered yet,
    /// failed, silent) said yes, there would not be one.
    Lost,
    /// Neither: a majority may still say yes, or may still hold what was asked about.
    Pending,
}

/// Where a vote of `nodes` stands with `yes` and `no` answers (errors and silence are neither).
pub(crate) fn vote_result(yes: usize, no: usize, nodes: usize) -> VoteResult {
    if is_majority(yes, nodes) {
        VoteResult::Won
    } else if no > nodes - majority(nodes) {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

/// How a take round (acquire, handoff) ended, from its yes and no answers of `nodes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TakeResult {
    /// A majority issued: the lock is taken (if its fence settles and validity is left).
    Won,
    /// The refusals alone rule out a majority: the lock is someone else's (or, for a handoff,
    /// no longer ours).
    Refused,
    /// Neither, with enough nodes answering yes or no that a majority could be formed: a
    /// split vote, or a late answer — try again. `won_some`: we won some nodes (and gave them
    /// back), so contenders retry after a short random pause rather than the backoff of
    /// "busy" (a majority refused: the lock is held).
    Split { won_some: bool },
    /// So many nodes failed or kept silent that no majority can be formed.
    Unreachable,
}

/// Where a take round of `nodes` ends with `yes` and `no` answers.
pub(crate) fn take_result(yes: usize, no: usize, nodes: usize) -> TakeResult {
    match vote_result(yes, no, nodes) {
        VoteResult::Won => TakeResult::Won,
        VoteResult::Lost => TakeResult::Refused,
        VoteResult::Pending if is_unreachable(nodes - yes - no, nodes) => TakeResult::Unreachable,
        VoteResult::Pending => TakeResult::Split { won_some: yes > 0 },
    }
}

/// One node's answer, as far as a round's stopping rule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Vote {
    Yes,
    No,
    Failed,
}

/// The stopping rule of a round that asked `asked` nodes for `needed` yes-answers: fed the
/// answers as they arrive, it says when the round's outcome is known well enough that the
/// nodes still out get only a short grace.
///
/// - Decided: enough said yes, or so many said no that the rest cannot make it. Errors and
///   silence never decide a round early (whether a take round ends "busy" or "unavailable"
///   depends on them).
/// - Split, for take rounds only (`split_grace`): some said yes, it is not decided, and the
///   nodes still out are too few to make it unreachable. Its end is "split" unless every one
///   of those says yes; waiting out a hung node's whole timeout would only choose between a
///   split and a win that a retry a few milliseconds later finds anyway (a lost take round
///   gives back what it took). A yes/no round (release, extend) never stops on a split: its
///   verdict says whether a lock is still held, and a late yes can make the majority.
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    asked: usize,
    needed: usize,
    split_grace: bool,
    yes: usize,
    no: usize,
    failed: usize,
}

impl Tally {
    pub(crate) fn new(asked: usize, needed: usize, split_grace: bool) -> Tally {
        Tally {
            asked,
            needed,
            split_grace,
            yes: 0,
            no: 0,
            failed: 0,
        }
    }

    /// Records one answer; `true` once the others should get only a grace.
    pub(crate) fn record(&mut self, vote: Vote) -> bool {
        match vote {
            Vote::Yes => self.yes += 1,
            Vote::No => self.no += 1,
            Vote::Failed => self.failed += 1,
        }
        let decided = self.yes >= self.needed || self.no + self.needed > self.asked;
        let not_yes_or_no = self.asked - self.yes - self.no;
        let split = self.split_grace
            && self.yes > 0
            && !decided
            && !is_unreachable(not_yes_or_no, self.asked);
        decided || split
    }
}

/// Whether so many nodes failed or kept silent that no majority can be formed.
pub(crate) fn is_unreachable(failed: usize, nodes: usize) -> bool {
    failed > nodes - majority(nodes)
}

/// Clock drift allowance for a TTL: 1% of it plus 2 ms (the Redlock paper's figures).
pub(crate) fn drift(ttl: Duration) -> Duration {
    ttl / 100 + Duration::from_millis(2)
}

/// How long a lock taken with `ttl`, whose acquisition took `elapsed`, can be relied on:
/// `ttl − elapsed − drift`, or `None` when nothing is left.
pub(crate) fn validity(ttl: Duration, elapsed: Duration) -> Option<Duration> {
    ttl.checked_sub(elapsed)?
        .checked_sub(drift(ttl))
        .filter(|left| !left.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_of_common_sizes() {
        assert_eq!([1, 3, 4, 5, 7].map(majority), [1, 2, 3, 3, 4]);
    }

    #[test]
    fn a_vote_is_lost_only_when_refusals_alone_rule_out_a_majority() {
        // 5 nodes, 3 needed.
        assert_eq!(vote_result(3, 0, 5), VoteResult::Won);
        assert_eq!(vote_result(0, 3, 5), VoteResult::Lost);
        assert_eq!(
            vote_result(2, 2, 5),
            VoteResult::Pending,
            "the fifth decides"
        );
        assert_eq!(
            vote_result(0, 2, 5),
            VoteResult::Pending,
            "silence decides nothing"
        );
        // 3 nodes: one yes, one no, one silent: the silent one may hold it with the yes.
        assert_eq!(vote_result(1, 1, 3), VoteResult::Pending);
    }

    #[test]
    fn validity_subtracts_elapsed_and_drift() {
        let ttl = Duration::from_millis(1000);
        assert_eq!(
            validity(ttl, Duration::from_millis(100)),
            Some(Duration::from_millis(888))
        );
        assert_eq!(validity(ttl, Duration::from_millis(988)), None);
        assert_eq!(validity(ttl, Duration::from_secs(5)), None);
    }

    /// Every vote pattern a round can see, through the real decision functions: for 1 to 7
    /// nodes, every sequence of yes / no / error answers in arrival order (nodes that never
    /// answer are silence), cut at every point from where the round's stopping rule starts
    /// the grace to the last answer (answers after the cut came too late: silence), for take
    /// rounds (acquire, handoff) and yes/no rounds (release, extend) alike. Inspect decides
    /// with the same `vote_result` (held = yes, free = no), force-unlock with `is_majority` of
    /// the nodes known clear of the holder.
    #[test]
    fn every_vote_pattern_in_every_arrival_order() {
        const KINDS: [Vote; 3] = [Vote::Yes, Vote::No, Vote::Failed];
        let mut patterns = 0u64;
        for nodes in 1..=7usize {
            let needed = majority(nodes);
            for answered in 0..=nodes {
                for code in 0..3usize.pow(answered as u32) {
                    let sequence: Vec<Vote> = (0..answered)
                        .map(|i| KINDS[code / 3usize.pow(i as u32) % 3])
                        .collect();
                    for split_grace in [false, true] {
                        let mut tally = Tally::new(nodes, needed, split_grace);
                        let grace_at = sequence.iter().position(|&vote| tally.record(vote));
                        let counts = |seen: &[Vote]| {
                            let count = |kind| seen.iter().filter(|&&v| v == kind).count();
                            (count(Vote::Yes), count(Vote::No), count(Vote::Failed))
                        };
                        // A yes/no round stops early only once its verdict is known and final.
                        let verdict_at_grace = grace_at.map(|at| {
                            let (yes, no, _) = counts(&sequence[..=at]);
                            vote_result(yes, no, nodes)
                        });
                        if !split_grace {
                            assert_ne!(
                                verdict_at_grace,
                                Some(VoteResult::Pending),
                                "a yes/no round stopped undecided: {sequence:?} of {nodes}"
                            );
                        }
                        for cut in grace_at.map_or(answered, |at| at + 1)..=answered {
                            patterns += 1;
                            let (yes, no, failed) = counts(&sequence[..cut]);
                            let silent = nodes - cut;
                            check(nodes, yes, no, failed + silent);
                            if let (false, Some(verdict)) = (split_grace, verdict_at_grace) {
                                assert_eq!(vote_result(yes, no, nodes), verdict, "changed");
                            }
                        }
                    }
                }
            }
        }
        eprintln!("{patterns} vote patterns checked");
    }

    fn check(nodes: usize, yes: usize, no: usize, unknown: usize) {
        let needed = majority(nodes);
        let case = format!("{nodes} nodes: {yes} yes, {no} no, {unknown} failed or silent");
        // Yes/no rounds (release, extend) and inspect ("held" = yes, "free" = no).
        match vote_result(yes, no, nodes) {
            VoteResult::Won => assert!(yes >= needed, "won without a majority: {case}"),
            VoteResult::Lost => {
                assert!(
                    no > nodes - needed,
                    "refused, refusals alone do not: {case}"
                );
                assert!(
                    yes + unknown < needed,
                    "refused while a majority may hold: {case}"
                );
            }
            VoteResult::Pending => {
                assert!(yes < needed && yes + unknown >= needed, "undecided: {case}");
            }
        }
        // Take rounds: a grant only with a majority; "busy" only when a majority can be formed
        // from the nodes that answered; "unavailable" only when it cannot.
        match take_result(yes, no, nodes) {
            TakeResult::Won => assert!(yes >= needed, "{case}"),
            TakeResult::Refused => assert!(yes + unknown < needed, "{case}"),
            TakeResult::Split { .. } => {
                assert!(yes < needed && unknown <= nodes - needed, "{case}");
            }
            TakeResult::Unreachable => assert!(unknown > nodes - needed, "{case}"),
        }
        // The quick retry of a split vote, never when a majority refused (the lock is held).
        if take_result(yes, no, nodes) == (TakeResult::Split { won_some: true }) {
            assert!(yes > 0 && yes < needed, "{case}");
            assert!(
                no <= nodes - needed,
                "a split vote a majority refused: {case}"
            );
        }
    }
}
