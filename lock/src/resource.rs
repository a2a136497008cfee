//! Resource names and the Redis keys derived from them.

use crate::LockError;

/// Longest accepted resource name, in bytes.
pub const MAX_RESOURCE_LEN: usize = 512;

/// Checks a resource name: non-empty, at most [`MAX_RESOURCE_LEN`] bytes, no control characters.
pub fn validate_resource(resource: &str) -> Result<(), LockError> {
    let reason = if resource.is_empty() {
        Some("it is empty")
    } else if resource.len() > MAX_RESOURCE_LEN {
        Some("it is longer than 512 bytes")
    } else if resource.chars().any(char::is_control) {
        Some("it contains control characters")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(LockError::InvalidResource {
            resource: resource.chars().take(64).collect(),
            reason,
        }),
    }
}

/// The Redis keys of one resource. Every key starts with `prefix:{resource}`, so whatever Redis
/// Cluster takes as the hash tag (the text from the first `{` to the next `}`) is the same in
/// each: they map to one slot and one Lua script may touch them all. The prefix may not contain
/// braces (checked in the configuration).
#[derive(Debug, Clone)]
pub(crate) struct ResourceKeys {
    /// `prefix:{resource}`, which every key starts with.
    base: String,
    /// Holds the owner's random token, with the lock's TTL.
    pub lock: String,
    /// The fencing counter: the last fence issued or reserved. It expires a minute after the
    /// last lock's TTL; fences keep rising anyway (see `NEXT_FENCE` in `scripts.rs`).
    pub fence: String,
    /// Pub/sub channel announcing releases.
    pub channel: String,
}

/// The extra keys of fair mode, built only when a fair lock needs them (not on every acquire).
#[derive(Debug, Clone)]
pub(crate) struct FairKeys {
    /// Waiters (sorted set, scored by arrival ticket).
    pub queue: String,
    /// Each waiter's lease (hash, waiter → expiry in ms).
    pub leases: String,
    /// The arrival ticket counter.
    pub tickets: String,
}

impl ResourceKeys {
    pub(crate) fn new(prefix: &str, resource: &str) -> ResourceKeys {
        let base = format!("{prefix}:{{{resource}}}");
        ResourceKeys {
            lock: format!("{base}:lock"),
            fence: format!("{base}:fence"),
            channel: format!("{base}:released"),
            base,
        }
    }

    pub(crate) fn fair(&self) -> FairKeys {
        let base = &self.base;
        FairKeys {
            queue: format!("{base}:queue"),
            leases: format!("{base}:leases"),
            tickets: format!("{base}:tickets"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names_and_rejects_bad_ones() {
        assert!(validate_resource("product:42").is_ok());
        assert!(validate_resource("ünïcode {braces} and spaces").is_ok());
        assert!(validate_resource(&"x".repeat(512)).is_ok());
        for bad in ["", "tab\there", "nl\n", "nul\0"] {
            assert!(matches!(
                validate_resource(bad),
                Err(LockError::InvalidResource { .. })
            ));
        }
        assert!(validate_resource(&"x".repeat(513)).is_err());
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = ResourceKeys::new("fencelock", "product:1");
        assert_eq!(keys.lock, "fencelock:{product:1}:lock");
        assert_eq!(keys.fence, "fencelock:{product:1}:fence");
        let tag = |key: &str| {
            let open = key.find('{').unwrap();
            let close = open + key[open..].find('}').unwrap();
            key[open + 1..close].to_string()
        };
        let odd = ResourceKeys::new("fencelock", "a}b{c");
        assert_eq!(tag(&odd.lock), tag(&odd.fence));
        assert_eq!(tag(&odd.lock), tag(&odd.fair().queue));
    }
}
