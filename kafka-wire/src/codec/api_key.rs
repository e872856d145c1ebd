//! Kafka's API keys: the number at the front of every request header that says which request it
//! is.
//!
//! The list is Apache Kafka 4.1's (`org.apache.kafka.common.protocol.ApiKeys`, from the
//! `apiKey` field of each `*Request.json` message schema), keys 0 to 92 with no gaps. Keys 4 to 7
//! are kept for their names only: Kafka 4.0 removed them together with ZooKeeper mode, and a 4.1
//! node serves them on no listener.

use super::open_enum;

open_enum! {
    /// The API key at the front of every request header.
    ///
    /// Names are Kafka's (`"Produce"`, `"ApiVersions"`, ...). A key this codebase does not know is
    /// kept as it is and prints as `ApiKey(<n>)`.
    pub struct ApiKey(i16) {
        PRODUCE = 0 => "Produce",
        FETCH = 1 => "Fetch",
        LIST_OFFSETS = 2 => "ListOffsets",
        METADATA = 3 => "Metadata",
        /// Removed in Kafka 4.0 (ZooKeeper mode only); no 4.1 listener serves it.
        LEADER_AND_ISR = 4 => "LeaderAndIsr",
        /// Removed in Kafka 4.0 (ZooKeeper mode only); no 4.1 listener serves it.
        STOP_REPLICA = 5 => "StopReplica",
        /// Removed in Kafka 4.0 (ZooKeeper mode only); no 4.1 listener serves it.
        UPDATE_METADATA = 6 => "UpdateMetadata",
        /// Removed in Kafka 4.0 (ZooKeeper mode only); no 4.1 listener serves it.
        CONTROLLED_SHUTDOWN = 7 => "ControlledShutdown",
        OFFSET_COMMIT = 8 => "OffsetCommit",
        OFFSET_FETCH = 9 => "OffsetFetch",
        FIND_COORDINATOR = 10 => "FindCoordinator",
        JOIN_GROUP = 11 => "JoinGroup",
        HEARTBEAT = 12 => "Heartbeat",
        LEAVE_GROUP = 13 => "LeaveGroup",
        SYNC_GROUP = 14 => "SyncGroup",
        DESCRIBE_GROUPS = 15 => "DescribeGroups",
        LIST_GROUPS = 16 => "ListGroups",
        SASL_HANDSHAKE = 17 => "SaslHandshake",
        API_VERSIONS = 18 => "ApiVersions",
        CREATE_TOPICS = 19 => "CreateTopics",
        DELETE_TOPICS = 20 => "DeleteTopics",
        DELETE_RECORDS = 21 => "DeleteRecords",
        INIT_PRODUCER_ID = 22 => "InitProducerId",
        OFFSET_FOR_LEADER_EPOCH = 23 => "OffsetForLeaderEpoch",
        ADD_PARTITIONS_TO_TXN = 24 => "AddPartitionsToTxn",
        ADD_OFFSETS_TO_TXN = 25 => "AddOffsetsToTxn",
        END_TXN = 26 => "EndTxn",
        WRITE_TXN_MARKERS = 27 => "WriteTxnMarkers",
        TXN_OFFSET_COMMIT = 28 => "TxnOffsetCommit",
        DESCRIBE_ACLS = 29 => "DescribeAcls",
        CREATE_ACLS = 30 => "CreateAcls",
        DELETE_ACLS = 31 => "DeleteAcls",
        DESCRIBE_CONFIGS = 32 => "DescribeConfigs",
        ALTER_CONFIGS = 33 => "AlterConfigs",
        ALTER_REPLICA_LOG_DIRS = 34 => "AlterReplicaLogDirs",
        DESCRIBE_LOG_DIRS = 35 => "DescribeLogDirs",
        SASL_AUTHENTICATE = 36 => "SaslAuthenticate",
        CREATE_PARTITIONS = 37 => "CreatePartitions",
        CREATE_DELEGATION_TOKEN = 38 => "CreateDelegationToken",
        RENEW_DELEGATION_TOKEN = 39 => "RenewDelegationToken",
        EXPIRE_DELEGATION_TOKEN = 40 => "ExpireDelegationToken",
        DESCRIBE_DELEGATION_TOKEN = 41 => "DescribeDelegationToken",
        DELETE_GROUPS = 42 => "DeleteGroups",
        ELECT_LEADERS = 43 => "ElectLeaders",
        INCREMENTAL_ALTER_CONFIGS = 44 => "IncrementalAlterConfigs",
        ALTER_PARTITION_REASSIGNMENTS = 45 => "AlterPartitionReassignments",
        LIST_PARTITION_REASSIGNMENTS = 46 => "ListPartitionReassignments",
        OFFSET_DELETE = 47 => "OffsetDelete",
        DESCRIBE_CLIENT_QUOTAS = 48 => "DescribeClientQuotas",
        ALTER_CLIENT_QUOTAS = 49 => "AlterClientQuotas",
        DESCRIBE_USER_SCRAM_CREDENTIALS = 50 => "DescribeUserScramCredentials",
        ALTER_USER_SCRAM_CREDENTIALS = 51 => "AlterUserScramCredentials",
        /// Served only by KRaft controllers.
        VOTE = 52 => "Vote",
        /// Served only by KRaft controllers.
        BEGIN_QUORUM_EPOCH = 53 => "BeginQuorumEpoch",
        /// Served only by KRaft controllers.
        END_QUORUM_EPOCH = 54 => "EndQuorumEpoch",
        DESCRIBE_QUORUM = 55 => "DescribeQuorum",
        /// Served only by KRaft controllers.
        ALTER_PARTITION = 56 => "AlterPartition",
        UPDATE_FEATURES = 57 => "UpdateFeatures",
        /// Served only by KRaft controllers.
        ENVELOPE = 58 => "Envelope",
        /// Served only by KRaft controllers.
        FETCH_SNAPSHOT = 59 => "FetchSnapshot",
        DESCRIBE_CLUSTER = 60 => "DescribeCluster",
        DESCRIBE_PRODUCERS = 61 => "DescribeProducers",
        /// Served only by KRaft controllers.
        BROKER_REGISTRATION = 62 => "BrokerRegistration",
        /// Served only by KRaft controllers.
        BROKER_HEARTBEAT = 63 => "BrokerHeartbeat",
        UNREGISTER_BROKER = 64 => "UnregisterBroker",
        DESCRIBE_TRANSACTIONS = 65 => "DescribeTransactions",
        LIST_TRANSACTIONS = 66 => "ListTransactions",
        /// Served only by KRaft controllers.
        ALLOCATE_PRODUCER_IDS = 67 => "AllocateProducerIds",
        CONSUMER_GROUP_HEARTBEAT = 68 => "ConsumerGroupHeartbeat",
        CONSUMER_GROUP_DESCRIBE = 69 => "ConsumerGroupDescribe",
        /// Served only by KRaft controllers.
        CONTROLLER_REGISTRATION = 70 => "ControllerRegistration",
        GET_TELEMETRY_SUBSCRIPTIONS = 71 => "GetTelemetrySubscriptions",
        PUSH_TELEMETRY = 72 => "PushTelemetry",
        /// Served only by KRaft controllers.
        ASSIGN_REPLICAS_TO_DIRS = 73 => "AssignReplicasToDirs",
        LIST_CONFIG_RESOURCES = 74 => "ListConfigResources",
        DESCRIBE_TOPIC_PARTITIONS = 75 => "DescribeTopicPartitions",
        SHARE_GROUP_HEARTBEAT = 76 => "ShareGroupHeartbeat",
        SHARE_GROUP_DESCRIBE = 77 => "ShareGroupDescribe",
        SHARE_FETCH = 78 => "ShareFetch",
        SHARE_ACKNOWLEDGE = 79 => "ShareAcknowledge",
        ADD_RAFT_VOTER = 80 => "AddRaftVoter",
        REMOVE_RAFT_VOTER = 81 => "RemoveRaftVoter",
        /// Served only by KRaft controllers.
        UPDATE_RAFT_VOTER = 82 => "UpdateRaftVoter",
        INITIALIZE_SHARE_GROUP_STATE = 83 => "InitializeShareGroupState",
        READ_SHARE_GROUP_STATE = 84 => "ReadShareGroupState",
        WRITE_SHARE_GROUP_STATE = 85 => "WriteShareGroupState",
        DELETE_SHARE_GROUP_STATE = 86 => "DeleteShareGroupState",
        READ_SHARE_GROUP_STATE_SUMMARY = 87 => "ReadShareGroupStateSummary",
        STREAMS_GROUP_HEARTBEAT = 88 => "StreamsGroupHeartbeat",
        STREAMS_GROUP_DESCRIBE = 89 => "StreamsGroupDescribe",
        DESCRIBE_SHARE_GROUP_OFFSETS = 90 => "DescribeShareGroupOffsets",
        ALTER_SHARE_GROUP_OFFSETS = 91 => "AlterShareGroupOffsets",
        DELETE_SHARE_GROUP_OFFSETS = 92 => "DeleteShareGroupOffsets",
    }
}

#[cfg(test)]
mod tests {
    use super::ApiKey;
    use std::collections::HashSet;

    #[test]
    fn known_values_and_names() {
        let cases = [
            (ApiKey::PRODUCE, 0, "Produce"),
            (ApiKey::FETCH, 1, "Fetch"),
            (ApiKey::LIST_OFFSETS, 2, "ListOffsets"),
            (ApiKey::METADATA, 3, "Metadata"),
            (ApiKey::OFFSET_COMMIT, 8, "OffsetCommit"),
            (ApiKey::API_VERSIONS, 18, "ApiVersions"),
            (ApiKey::INIT_PRODUCER_ID, 22, "InitProducerId"),
            (ApiKey::DESCRIBE_CLUSTER, 60, "DescribeCluster"),
            (ApiKey::DESCRIBE_PRODUCERS, 61, "DescribeProducers"),
            (ApiKey::DESCRIBE_TRANSACTIONS, 65, "DescribeTransactions"),
            (ApiKey::LIST_TRANSACTIONS, 66, "ListTransactions"),
            (ApiKey::CONSUMER_GROUP_HEARTBEAT, 68, "ConsumerGroupHeartbeat"),
            (ApiKey::CONSUMER_GROUP_DESCRIBE, 69, "ConsumerGroupDescribe"),
            (ApiKey::SHARE_FETCH, 78, "ShareFetch"),
            (ApiKey::STREAMS_GROUP_HEARTBEAT, 88, "StreamsGroupHeartbeat"),
            (ApiKey::DELETE_SHARE_GROUP_OFFSETS, 92, "DeleteShareGroupOffsets"),
        ];
        for (key, value, name) in cases {
            assert_eq!(key.0, value);
            assert_eq!(key, ApiKey(value));
            assert_eq!(key.name(), Some(name));
            assert_eq!(format!("{key:?}"), name);
            assert_eq!(key.to_string(), name);
        }
    }

    #[test]
    fn unknown_values_round_trip() {
        for value in [-1i16, 93, 1000, i16::MAX, i16::MIN] {
            let key = ApiKey(value);
            assert_eq!(key.0, value);
            assert_eq!(key.name(), None);
            assert!(!ApiKey::KNOWN.contains(&key));
            assert_eq!(format!("{key:?}"), format!("ApiKey({value})"));
        }
    }

    #[test]
    fn known_is_contiguous_without_duplicates() {
        let values: HashSet<i16> = ApiKey::KNOWN.iter().map(|k| k.0).collect();
        assert_eq!(values.len(), ApiKey::KNOWN.len(), "duplicate value in KNOWN");
        let names: HashSet<&str> = ApiKey::KNOWN.iter().map(|k| k.name().unwrap()).collect();
        assert_eq!(names.len(), ApiKey::KNOWN.len(), "duplicate name in KNOWN");
        // Kafka 4.1 defines keys 0..=92 with no gaps, listed in order.
        assert_eq!(ApiKey::KNOWN.len(), 93);
        for (i, key) in ApiKey::KNOWN.iter().enumerate() {
            assert_eq!(usize::try_from(key.0).unwrap(), i);
        }
    }
}
