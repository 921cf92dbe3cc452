//! Static group membership (KIP-345): a stage process that names itself with a stable
//! `group.instance.id` keeps its place in its consumer groups across restarts.
//!
//! Why: with dynamic membership a member killed with SIGKILL keeps its partitions until
//! the broker's session timeout evicts it, then the whole group rebalances, and the
//! stream stage rebuilds the state of every partition that moved. A static member that
//! comes back with the same id within the session timeout takes over its old member id
//! and gets exactly its old partitions back, without a rebalance of the others. A broker
//! that never evicts dead members (tansu 0.6) leaves a dynamic member's partitions with
//! the dead member for good; a static member is recognised and replaces it.
//!
//! Invariants:
//! - an id is unique per consumer group: two live processes with one id fence each other
//!   (the broker refuses the older with `FENCED_INSTANCE_ID`), so each group a stage
//!   joins gets its own id ([`InstanceId::for_group`]);
//! - only members of a group carry one ([`crate::KafkaConfig::group_member`]); readers
//!   that assign partitions by hand or only query offsets join no group and carry none.

use std::fmt;
use std::str::FromStr;

/// Kafka's limit on `group.instance.id` (the topic-name rules: at most 249 bytes of
/// `[a-zA-Z0-9._-]`). A Kubernetes pod name always fits.
pub const MAX_INSTANCE_ID_LEN: usize = 249;

/// A member's stable name in a consumer group: `--instance-id` / `FEEDER_INSTANCE_ID`,
/// in Kubernetes the StatefulSet pod name (`feeder-stream-0`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceId(String);

impl InstanceId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of the same process in another group it joins: `<id>-<suffix>` (the
    /// stream's cohort aggregator joins `<group>-cohorts` as `<id>-cohorts`), so logs
    /// and the broker's group listings tell the two apart. Ids need only be unique within
    /// a group, so when the suffix does not fit the length limit the id itself is used:
    /// distinct ids stay distinct (cutting would not guarantee that).
    pub fn for_group(&self, suffix: &str) -> InstanceId {
        let id = format!("{}-{suffix}", self.0);
        match id.parse() {
            Ok(derived) => derived,
            Err(_) => self.clone(),
        }
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for InstanceId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("an instance id must not be empty".into());
        }
        if s.len() > MAX_INSTANCE_ID_LEN {
            return Err(format!(
                "an instance id has at most {MAX_INSTANCE_ID_LEN} characters"
            ));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err("an instance id has only letters, digits, '.', '_' and '-'".into());
        }
        Ok(InstanceId(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_kafkas_rules() {
        for ok in ["feeder-stream-0", "writer_1", "a.b", "x"] {
            assert_eq!(ok.parse::<InstanceId>().unwrap().as_str(), ok);
        }
        for bad in ["", "has space", "slash/ed", "ünï", &"x".repeat(250)] {
            assert!(bad.parse::<InstanceId>().is_err(), "{bad:?} accepted");
        }
        assert!("x".repeat(249).parse::<InstanceId>().is_ok());
    }

    #[test]
    fn each_group_gets_its_own_valid_id() {
        let id: InstanceId = "feeder-stream-3".parse().unwrap();
        assert_eq!(id.for_group("cohorts").as_str(), "feeder-stream-3-cohorts");
        // too long for the suffix: the id itself, still unique within the other group
        let (a, b): (InstanceId, InstanceId) = (
            "a".repeat(245).parse().unwrap(),
            "b".repeat(245).parse().unwrap(),
        );
        assert_eq!(a.for_group("cohorts"), a);
        assert_ne!(a.for_group("cohorts"), b.for_group("cohorts"));
    }
}
