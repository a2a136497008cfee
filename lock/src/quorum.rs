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

/// Whether a round that asked `asked` nodes for `needed` yes-answers is decided: enough said
/// yes, or so many said no that the rest cannot make it. (Errors and silence do not decide a
/// round early: whether it ends "busy" or "unavailable" depends on them, so it waits for them.)
pub(crate) fn is_decided(yes: usize, no: usize, needed: usize, asked: usize) -> bool {
    yes >= needed || no + needed > asked
}

/// Whether an undecided round split the vote so far and waits only on nodes (not answered yet,
/// or failed) too few to make it unreachable: its end is "split" unless every one of those says
/// yes. Such a round gets the same grace as a decided one: waiting out a hung node's whole
/// timeout would only choose between a split and a win that a retry a few milliseconds later
/// finds anyway (a lost round gives back what it took).
pub(crate) fn is_split_but_reachable(
    yes: usize,
    no: usize,
    failed_or_unanswered: usize,
    needed: usize,
    asked: usize,
) -> bool {
    yes > 0 && !is_decided(yes, no, needed, asked) && !is_unreachable(failed_or_unanswered, asked)
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
    fn a_round_is_decided_by_yes_or_by_refusals_not_by_silence() {
        // 5 nodes, 3 needed.
        assert!(is_decided(3, 0, 3, 5));
        assert!(is_decided(0, 3, 3, 5));
        assert!(!is_decided(2, 2, 3, 5), "the fifth node decides");
        assert!(
            !is_decided(0, 2, 3, 5),
            "errors or silence must be waited for"
        );
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
}
