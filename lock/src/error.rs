//! Typed errors: what happened, and what to do about it.

use std::fmt;
use std::time::Duration;

/// Why a lock operation failed.
///
/// `Busy` and `Unavailable` are deliberately distinct: the first means "someone else holds it,
/// try later", the second means "Redis could not be asked" and must never be mistaken for the
/// first.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another holder kept the lock for the whole wait budget.
    #[error(
        "lock `{resource}` is busy: still held by another owner after waiting {waited:?}; \
         retry later or raise the wait budget"
    )]
    Busy {
        /// The resource that was asked for.
        resource: String,
        /// How long this call waited before giving up.
        waited: Duration,
        /// When the current hold expires at the latest, if Redis said (for `Retry-After`).
        retry_after: Option<Duration>,
    },

    /// Redis could not be reached, or too few nodes answered to form a majority.
    #[error(
        "lock service unavailable for `{resource}`: {reachable} of {nodes} Redis node(s) answered, \
         {needed} needed; check that Redis is up ({errors})"
    )]
    Unavailable {
        /// The resource that was asked for.
        resource: String,
        /// How many nodes are configured.
        nodes: usize,
        /// How many answered.
        reachable: usize,
        /// How many must agree (a majority).
        needed: usize,
        /// What each failing node said.
        errors: NodeErrors,
    },

    /// The lock was lost while held: it expired or an extension was refused.
    #[error(
        "lock `{resource}` was lost while held (expired or taken over); the work done under it \
         may have raced with another holder: fence your writes"
    )]
    Lost {
        /// The resource that was lost.
        resource: String,
    },

    /// The resource name cannot be used as a lock key.
    #[error("invalid lock resource {resource:?}: {reason}")]
    InvalidResource {
        /// The offending resource (possibly truncated for display).
        resource: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The options asked for something this locker cannot do.
    #[error("invalid lock options: {0}")]
    InvalidOptions(&'static str),

    /// The locker configuration is unusable (bad URL, wrong number of nodes).
    #[error("invalid locker configuration: {0}")]
    Config(String),
}

impl LockError {
    /// The stable, machine-readable code used in HTTP error bodies and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            LockError::Busy { .. } => "lock_busy",
            LockError::Unavailable { .. } => "lock_unavailable",
            LockError::Lost { .. } => "lock_lost",
            LockError::InvalidResource { .. } => "invalid_lock_resource",
            LockError::InvalidOptions(_) => "invalid_lock_options",
            LockError::Config(_) => "lock_config",
        }
    }
}

/// One error per failing Redis node, in node order.
#[derive(Debug, Clone, Default)]
pub struct NodeErrors(pub Vec<NodeError>);

/// What went wrong talking to one Redis node.
#[derive(Debug, Clone, thiserror::Error)]
#[error("node {node} ({address}): {message}")]
pub struct NodeError {
    /// Index of the node in the configuration.
    pub node: usize,
    /// The node's address (without credentials).
    pub address: String,
    /// What happened.
    pub message: String,
}

impl fmt::Display for NodeErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no node errors recorded");
        }
        for (i, err) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{err}")?;
        }
        Ok(())
    }
}
