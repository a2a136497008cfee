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

/// The Redis keys of one resource. Every key starts with `prefix:{resource}` (`prefix:{\x01}…`
/// for a name starting with `}`), so whatever Redis Cluster takes as the hash tag (the text
/// from the first `{` to the next `}`, never empty) is the same in each: they map to one slot
/// and one Lua script may touch them all. The prefix may not contain
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
        // Redis Cluster hashes the text between the first `{` and the next `}` — unless it is
        // empty: then it hashes the whole key, and a lock's keys would land in different slots
        // (a script touching two of them fails with CROSSSLOT). A name starting with `}` would
        // make it empty, so a control character goes in front of such a name: no valid name
        // contains one, so no two names share keys.
        let marker = if resource.starts_with('}') {
            "\u{1}"
        } else {
            ""
        };
        let base = format!("{prefix}:{{{marker}{resource}}}");
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

    /// On a real Redis Cluster (the server's own hashing, not ours): every key and the
    /// channel of one lock map to one slot — so every script, which touches several of them,
    /// runs on one shard, and a sharded release message goes to the shard of the lock —
    /// whatever the resource name holds (braces, colons, unicode, the longest name).
    #[test]
    fn every_key_and_channel_of_a_lock_lands_in_one_slot() {
        let cluster = fencelock_testkit::RedisCluster::start(3, 0);
        let names = [
            "product:42".to_string(),
            "a}b{c".to_string(),
            "{}".to_string(),
            "}{".to_string(),
            "ünïcode {braces} and spaces".to_string(),
            "x".repeat(MAX_RESOURCE_LEN),
        ];
        let mut slots = std::collections::BTreeSet::new();
        for name in &names {
            validate_resource(name).expect("a valid resource name");
            let keys = ResourceKeys::new("fencelock", name);
            let fair = keys.fair();
            let slot = cluster.keyslot(&keys.lock);
            for key in [
                &keys.fence,
                &keys.channel,
                &fair.queue,
                &fair.leases,
                &fair.tickets,
            ] {
                assert_eq!(cluster.keyslot(key), slot, "{key} of {name:?}");
            }
            slots.insert(slot);
        }
        // Different resources spread over the slots (the hash tag is the resource).
        assert!(slots.len() > 1, "{slots:?}");
    }
}
