//! Kafka's error codes: the `i16` that every response, and many parts of responses, carry to say
//! whether an operation worked and, if not, why.
//!
//! The list is Apache Kafka 4.1's (`org.apache.kafka.common.protocol.Errors`), codes -1 to 133 with
//! no gaps, named exactly as that enum names them. A code is *retriable* when Kafka's exception
//! for it extends `RetriableException` (this includes every `InvalidMetadataException`, whose
//! cure is a metadata refresh before the retry). That is Kafka's general classification only:
//! clients handle some non-retriable codes by other means, for example
//! [`ErrorCode::REBALANCE_IN_PROGRESS`] by rejoining the group, and Kafka marks a few codes
//! retriable that a caller may not want to retry blindly, such as [`ErrorCode::CORRUPT_MESSAGE`]
//! and [`ErrorCode::ELECTION_NOT_NEEDED`]. The descriptions are this crate's own one-line
//! summaries, not Kafka's messages.

use super::open_enum;

/// [`open_enum!`] plus, for each value, whether Kafka considers it retriable and a one-line
/// description. Each row reads `CONST = value => "Name", retriable: bool, "description";`.
macro_rules! error_codes {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident($repr:ty) {
            $(
                $konst:ident = $value:literal => $display:literal,
                retriable: $retriable:literal, $desc:literal;
            )*
        }
    ) => {
        open_enum! {
            $(#[$meta])*
            $vis struct $name($repr) {
                $(
                    #[doc = $desc]
                    #[doc = ""]
                    #[doc = concat!("Retriable: `", stringify!($retriable), "`.")]
                    $konst = $value => $display,
                )*
            }
        }

        impl $name {
            /// Whether Kafka classifies this code as retriable (its exception extends
            /// `RetriableException`): the same request may succeed if sent again, possibly after
            /// refreshing metadata or finding the coordinator again. `false` for
            /// [`Self::NONE`] and for codes this codebase does not know.
            pub const fn is_retriable(self) -> bool {
                match self.0 {
                    $( $value => $retriable, )*
                    _ => false,
                }
            }

            /// A one-line description of this code, or `None` if it is not one this codebase
            /// knows.
            pub const fn description(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some($desc), )*
                    _ => None,
                }
            }
        }

        /// Each known constant with its identifier, so tests can check that names match.
        #[cfg(test)]
        const CONST_IDENTS: &[($name, &str)] = &[$( ($name::$konst, stringify!($konst)) ),*];
    };
}

error_codes! {
    /// The error code of a response or of one of its parts.
    ///
    /// Names are Kafka's (`"NOT_LEADER_OR_FOLLOWER"`, ...). A code this codebase does not know is
    /// kept as it is, prints as `ErrorCode(<n>)` and is not retriable.
    pub struct ErrorCode(i16) {
        UNKNOWN_SERVER_ERROR = -1 => "UNKNOWN_SERVER_ERROR", retriable: false, "The broker hit an unexpected internal error while handling the request.";
        NONE = 0 => "NONE", retriable: false, "No error: the operation succeeded.";
        OFFSET_OUT_OF_RANGE = 1 => "OFFSET_OUT_OF_RANGE", retriable: false, "The requested offset lies outside the offsets the partition currently holds.";
        CORRUPT_MESSAGE = 2 => "CORRUPT_MESSAGE", retriable: true, "A record failed validation: bad CRC, invalid size, null key on a compacted topic, or other corruption.";
        UNKNOWN_TOPIC_OR_PARTITION = 3 => "UNKNOWN_TOPIC_OR_PARTITION", retriable: true, "This broker does not know the topic or partition, or does not host it.";
        INVALID_FETCH_SIZE = 4 => "INVALID_FETCH_SIZE", retriable: false, "The fetch size in the request is not acceptable.";
        LEADER_NOT_AVAILABLE = 5 => "LEADER_NOT_AVAILABLE", retriable: true, "The partition has no leader right now, typically because an election is under way.";
        NOT_LEADER_OR_FOLLOWER = 6 => "NOT_LEADER_OR_FOLLOWER", retriable: true, "This broker is not the partition's leader (or, for replica requests, not one of its replicas).";
        REQUEST_TIMED_OUT = 7 => "REQUEST_TIMED_OUT", retriable: true, "The request did not complete within its timeout.";
        BROKER_NOT_AVAILABLE = 8 => "BROKER_NOT_AVAILABLE", retriable: false, "The target broker cannot be reached or is not up.";
        REPLICA_NOT_AVAILABLE = 9 => "REPLICA_NOT_AVAILABLE", retriable: true, "The replica for this partition is not available on this broker.";
        MESSAGE_TOO_LARGE = 10 => "MESSAGE_TOO_LARGE", retriable: false, "A message in the request exceeds the largest size the broker accepts.";
        STALE_CONTROLLER_EPOCH = 11 => "STALE_CONTROLLER_EPOCH", retriable: false, "The request carried an old controller epoch; the controller has moved.";
        OFFSET_METADATA_TOO_LARGE = 12 => "OFFSET_METADATA_TOO_LARGE", retriable: false, "The metadata string attached to an offset commit is too long.";
        NETWORK_EXCEPTION = 13 => "NETWORK_EXCEPTION", retriable: true, "The connection was closed before a response arrived.";
        COORDINATOR_LOAD_IN_PROGRESS = 14 => "COORDINATOR_LOAD_IN_PROGRESS", retriable: true, "The coordinator is still loading its state and cannot serve requests yet.";
        COORDINATOR_NOT_AVAILABLE = 15 => "COORDINATOR_NOT_AVAILABLE", retriable: true, "No coordinator is currently available for the group or transaction.";
        NOT_COORDINATOR = 16 => "NOT_COORDINATOR", retriable: true, "This broker is not the coordinator for the group or transactional id.";
        INVALID_TOPIC_EXCEPTION = 17 => "INVALID_TOPIC_EXCEPTION", retriable: false, "The topic named in the request is invalid (bad name, or an internal topic that cannot be used this way).";
        RECORD_LIST_TOO_LARGE = 18 => "RECORD_LIST_TOO_LARGE", retriable: false, "A record batch is larger than the topic's configured segment size.";
        NOT_ENOUGH_REPLICAS = 19 => "NOT_ENOUGH_REPLICAS", retriable: true, "The write was rejected because fewer replicas are in sync than min.insync.replicas requires.";
        NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20 => "NOT_ENOUGH_REPLICAS_AFTER_APPEND", retriable: true, "The write was stored, but fewer replicas than required acknowledged it.";
        INVALID_REQUIRED_ACKS = 21 => "INVALID_REQUIRED_ACKS", retriable: false, "The produce request's acks value is not one the broker accepts.";
        ILLEGAL_GENERATION = 22 => "ILLEGAL_GENERATION", retriable: false, "The group generation in the request is not the current one.";
        INCONSISTENT_GROUP_PROTOCOL = 23 => "INCONSISTENT_GROUP_PROTOCOL", retriable: false, "The member's protocol type or protocols do not match those of the group.";
        INVALID_GROUP_ID = 24 => "INVALID_GROUP_ID", retriable: false, "The group id is empty or otherwise invalid.";
        UNKNOWN_MEMBER_ID = 25 => "UNKNOWN_MEMBER_ID", retriable: false, "The coordinator does not recognize this member id.";
        INVALID_SESSION_TIMEOUT = 26 => "INVALID_SESSION_TIMEOUT", retriable: false, "The session timeout falls outside the broker's permitted range.";
        REBALANCE_IN_PROGRESS = 27 => "REBALANCE_IN_PROGRESS", retriable: false, "The group is rebalancing; the member has to rejoin.";
        INVALID_COMMIT_OFFSET_SIZE = 28 => "INVALID_COMMIT_OFFSET_SIZE", retriable: false, "The size of the offset data being committed is invalid.";
        TOPIC_AUTHORIZATION_FAILED = 29 => "TOPIC_AUTHORIZATION_FAILED", retriable: false, "The principal is not authorized to access the topic.";
        GROUP_AUTHORIZATION_FAILED = 30 => "GROUP_AUTHORIZATION_FAILED", retriable: false, "The principal is not authorized to access the group.";
        CLUSTER_AUTHORIZATION_FAILED = 31 => "CLUSTER_AUTHORIZATION_FAILED", retriable: false, "The principal is not authorized for this cluster-level operation.";
        INVALID_TIMESTAMP = 32 => "INVALID_TIMESTAMP", retriable: false, "A record's timestamp is outside the range the broker accepts.";
        UNSUPPORTED_SASL_MECHANISM = 33 => "UNSUPPORTED_SASL_MECHANISM", retriable: false, "The requested SASL mechanism is not enabled on the broker.";
        ILLEGAL_SASL_STATE = 34 => "ILLEGAL_SASL_STATE", retriable: false, "The request is not allowed in the current state of the SASL exchange.";
        UNSUPPORTED_VERSION = 35 => "UNSUPPORTED_VERSION", retriable: false, "The broker does not support this API version.";
        TOPIC_ALREADY_EXISTS = 36 => "TOPIC_ALREADY_EXISTS", retriable: false, "The topic to be created already exists.";
        INVALID_PARTITIONS = 37 => "INVALID_PARTITIONS", retriable: false, "The requested number of partitions is invalid.";
        INVALID_REPLICATION_FACTOR = 38 => "INVALID_REPLICATION_FACTOR", retriable: false, "The replication factor is below 1 or larger than the number of live brokers.";
        INVALID_REPLICA_ASSIGNMENT = 39 => "INVALID_REPLICA_ASSIGNMENT", retriable: false, "The replica assignment in the request is invalid.";
        INVALID_CONFIG = 40 => "INVALID_CONFIG", retriable: false, "The configuration in the request is invalid.";
        NOT_CONTROLLER = 41 => "NOT_CONTROLLER", retriable: true, "This node is not the active controller.";
        INVALID_REQUEST = 42 => "INVALID_REQUEST", retriable: false, "The request is malformed or not valid for this broker; the broker log has details.";
        UNSUPPORTED_FOR_MESSAGE_FORMAT = 43 => "UNSUPPORTED_FOR_MESSAGE_FORMAT", retriable: false, "The broker's message format version cannot serve this request.";
        POLICY_VIOLATION = 44 => "POLICY_VIOLATION", retriable: false, "The request violates a policy configured on the broker.";
        OUT_OF_ORDER_SEQUENCE_NUMBER = 45 => "OUT_OF_ORDER_SEQUENCE_NUMBER", retriable: false, "The broker got a producer sequence number that is out of order.";
        DUPLICATE_SEQUENCE_NUMBER = 46 => "DUPLICATE_SEQUENCE_NUMBER", retriable: false, "The broker got a producer sequence number it has already seen.";
        INVALID_PRODUCER_EPOCH = 47 => "INVALID_PRODUCER_EPOCH", retriable: false, "The producer used an epoch older than the current one.";
        INVALID_TXN_STATE = 48 => "INVALID_TXN_STATE", retriable: false, "The transactional operation is not valid in the transaction's current state.";
        INVALID_PRODUCER_ID_MAPPING = 49 => "INVALID_PRODUCER_ID_MAPPING", retriable: false, "The producer id is not the one currently assigned to this transactional id.";
        INVALID_TRANSACTION_TIMEOUT = 50 => "INVALID_TRANSACTION_TIMEOUT", retriable: false, "The transaction timeout exceeds the broker's transaction.max.timeout.ms.";
        CONCURRENT_TRANSACTIONS = 51 => "CONCURRENT_TRANSACTIONS", retriable: true, "Another operation on the same transaction is still in progress.";
        TRANSACTION_COORDINATOR_FENCED = 52 => "TRANSACTION_COORDINATOR_FENCED", retriable: false, "The transaction coordinator that sent the marker is no longer the current one.";
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53 => "TRANSACTIONAL_ID_AUTHORIZATION_FAILED", retriable: false, "The principal is not authorized for this transactional id.";
        SECURITY_DISABLED = 54 => "SECURITY_DISABLED", retriable: false, "Security features are disabled on the broker.";
        OPERATION_NOT_ATTEMPTED = 55 => "OPERATION_NOT_ATTEMPTED", retriable: false, "The broker skipped this operation, usually because another part of the same batch failed.";
        KAFKA_STORAGE_ERROR = 56 => "KAFKA_STORAGE_ERROR", retriable: true, "The broker hit a disk error while accessing a log file.";
        LOG_DIR_NOT_FOUND = 57 => "LOG_DIR_NOT_FOUND", retriable: false, "The requested log directory is not configured on the broker.";
        SASL_AUTHENTICATION_FAILED = 58 => "SASL_AUTHENTICATION_FAILED", retriable: false, "The SASL handshake completed but authentication was rejected.";
        UNKNOWN_PRODUCER_ID = 59 => "UNKNOWN_PRODUCER_ID", retriable: false, "The broker has no producer state for this producer id (for example, after its records expired).";
        REASSIGNMENT_IN_PROGRESS = 60 => "REASSIGNMENT_IN_PROGRESS", retriable: false, "Another partition reassignment is already running.";
        DELEGATION_TOKEN_AUTH_DISABLED = 61 => "DELEGATION_TOKEN_AUTH_DISABLED", retriable: false, "Delegation tokens are not enabled on the broker.";
        DELEGATION_TOKEN_NOT_FOUND = 62 => "DELEGATION_TOKEN_NOT_FOUND", retriable: false, "The delegation token does not exist on the broker.";
        DELEGATION_TOKEN_OWNER_MISMATCH = 63 => "DELEGATION_TOKEN_OWNER_MISMATCH", retriable: false, "The principal is not the owner or a renewer of the delegation token.";
        DELEGATION_TOKEN_REQUEST_NOT_ALLOWED = 64 => "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED", retriable: false, "Delegation token requests are not allowed on this kind of connection.";
        DELEGATION_TOKEN_AUTHORIZATION_FAILED = 65 => "DELEGATION_TOKEN_AUTHORIZATION_FAILED", retriable: false, "The principal is not authorized for this delegation token operation.";
        DELEGATION_TOKEN_EXPIRED = 66 => "DELEGATION_TOKEN_EXPIRED", retriable: false, "The delegation token has expired.";
        INVALID_PRINCIPAL_TYPE = 67 => "INVALID_PRINCIPAL_TYPE", retriable: false, "The principal type is not supported.";
        NON_EMPTY_GROUP = 68 => "NON_EMPTY_GROUP", retriable: false, "The group still has members, so the operation is refused.";
        GROUP_ID_NOT_FOUND = 69 => "GROUP_ID_NOT_FOUND", retriable: false, "No group with this id exists.";
        FETCH_SESSION_ID_NOT_FOUND = 70 => "FETCH_SESSION_ID_NOT_FOUND", retriable: true, "The broker has no fetch session with this id.";
        INVALID_FETCH_SESSION_EPOCH = 71 => "INVALID_FETCH_SESSION_EPOCH", retriable: true, "The fetch session epoch does not match what the broker expects.";
        LISTENER_NOT_FOUND = 72 => "LISTENER_NOT_FOUND", retriable: true, "The leader has no listener matching the one the metadata request arrived on.";
        TOPIC_DELETION_DISABLED = 73 => "TOPIC_DELETION_DISABLED", retriable: false, "Deleting topics is disabled on this cluster.";
        FENCED_LEADER_EPOCH = 74 => "FENCED_LEADER_EPOCH", retriable: true, "The request's leader epoch is older than the broker's.";
        UNKNOWN_LEADER_EPOCH = 75 => "UNKNOWN_LEADER_EPOCH", retriable: true, "The request's leader epoch is newer than the broker's.";
        UNSUPPORTED_COMPRESSION_TYPE = 76 => "UNSUPPORTED_COMPRESSION_TYPE", retriable: false, "The client does not support the partition's compression type.";
        STALE_BROKER_EPOCH = 77 => "STALE_BROKER_EPOCH", retriable: false, "The broker epoch in the request is stale.";
        OFFSET_NOT_AVAILABLE = 78 => "OFFSET_NOT_AVAILABLE", retriable: true, "The new leader's high watermark has not caught up yet, so offsets cannot be served safely.";
        MEMBER_ID_REQUIRED = 79 => "MEMBER_ID_REQUIRED", retriable: false, "The member must obtain a member id before it can join the group.";
        PREFERRED_LEADER_NOT_AVAILABLE = 80 => "PREFERRED_LEADER_NOT_AVAILABLE", retriable: true, "The partition's preferred replica cannot become leader right now.";
        GROUP_MAX_SIZE_REACHED = 81 => "GROUP_MAX_SIZE_REACHED", retriable: false, "The group is already at its maximum size.";
        FENCED_INSTANCE_ID = 82 => "FENCED_INSTANCE_ID", retriable: false, "Another member with the same group.instance.id has taken over; this static member is fenced.";
        ELIGIBLE_LEADERS_NOT_AVAILABLE = 83 => "ELIGIBLE_LEADERS_NOT_AVAILABLE", retriable: true, "No eligible leader is available for the partition.";
        ELECTION_NOT_NEEDED = 84 => "ELECTION_NOT_NEEDED", retriable: true, "The partition does not need a leader election.";
        NO_REASSIGNMENT_IN_PROGRESS = 85 => "NO_REASSIGNMENT_IN_PROGRESS", retriable: false, "There is no ongoing partition reassignment to act on.";
        GROUP_SUBSCRIBED_TO_TOPIC = 86 => "GROUP_SUBSCRIBED_TO_TOPIC", retriable: false, "Offsets of a topic cannot be deleted while the group is subscribed to it.";
        INVALID_RECORD = 87 => "INVALID_RECORD", retriable: false, "The broker rejected a record that failed its validation.";
        UNSTABLE_OFFSET_COMMIT = 88 => "UNSTABLE_OFFSET_COMMIT", retriable: true, "Pending transactional offsets must be resolved before the committed offsets can be read.";
        THROTTLING_QUOTA_EXCEEDED = 89 => "THROTTLING_QUOTA_EXCEEDED", retriable: true, "The request exceeds a throttling quota.";
        PRODUCER_FENCED = 90 => "PRODUCER_FENCED", retriable: false, "A newer producer with the same transactional id has fenced this one.";
        RESOURCE_NOT_FOUND = 91 => "RESOURCE_NOT_FOUND", retriable: false, "The request refers to a resource that does not exist.";
        DUPLICATE_RESOURCE = 92 => "DUPLICATE_RESOURCE", retriable: false, "The request names the same resource more than once.";
        UNACCEPTABLE_CREDENTIAL = 93 => "UNACCEPTABLE_CREDENTIAL", retriable: false, "The credential does not meet the broker's acceptance criteria.";
        INCONSISTENT_VOTER_SET = 94 => "INCONSISTENT_VOTER_SET", retriable: false, "The sender or receiver of a voter-only request is not in the expected voter set.";
        INVALID_UPDATE_VERSION = 95 => "INVALID_UPDATE_VERSION", retriable: false, "The feature update version is invalid.";
        FEATURE_UPDATE_FAILED = 96 => "FEATURE_UPDATE_FAILED", retriable: false, "Finalized features could not be updated because of a server error.";
        PRINCIPAL_DESERIALIZATION_FAILURE = 97 => "PRINCIPAL_DESERIALIZATION_FAILURE", retriable: false, "A forwarded request's principal could not be deserialized.";
        SNAPSHOT_NOT_FOUND = 98 => "SNAPSHOT_NOT_FOUND", retriable: false, "The requested snapshot does not exist.";
        POSITION_OUT_OF_RANGE = 99 => "POSITION_OUT_OF_RANGE", retriable: false, "The requested position lies outside the snapshot.";
        UNKNOWN_TOPIC_ID = 100 => "UNKNOWN_TOPIC_ID", retriable: true, "This broker does not know the topic id.";
        DUPLICATE_BROKER_REGISTRATION = 101 => "DUPLICATE_BROKER_REGISTRATION", retriable: false, "Another broker has already registered with this broker id.";
        BROKER_ID_NOT_REGISTERED = 102 => "BROKER_ID_NOT_REGISTERED", retriable: false, "No broker is registered with this broker id.";
        INCONSISTENT_TOPIC_ID = 103 => "INCONSISTENT_TOPIC_ID", retriable: true, "The topic id in the request does not match the one in the log.";
        INCONSISTENT_CLUSTER_ID = 104 => "INCONSISTENT_CLUSTER_ID", retriable: false, "The cluster id in the request does not match the server's.";
        TRANSACTIONAL_ID_NOT_FOUND = 105 => "TRANSACTIONAL_ID_NOT_FOUND", retriable: false, "No transaction exists for this transactional id.";
        FETCH_SESSION_TOPIC_ID_ERROR = 106 => "FETCH_SESSION_TOPIC_ID_ERROR", retriable: true, "The fetch session used topic ids inconsistently.";
        INELIGIBLE_REPLICA = 107 => "INELIGIBLE_REPLICA", retriable: false, "The proposed ISR includes a replica that is not eligible.";
        NEW_LEADER_ELECTED = 108 => "NEW_LEADER_ELECTED", retriable: false, "The partition state was updated, but a new leader has been elected meanwhile.";
        OFFSET_MOVED_TO_TIERED_STORAGE = 109 => "OFFSET_MOVED_TO_TIERED_STORAGE", retriable: false, "The offset is no longer on the broker's local log; it lives in tiered storage.";
        FENCED_MEMBER_EPOCH = 110 => "FENCED_MEMBER_EPOCH", retriable: false, "The group coordinator fenced this member epoch; the member must give up its partitions and rejoin.";
        UNRELEASED_INSTANCE_ID = 111 => "UNRELEASED_INSTANCE_ID", retriable: false, "The instance id is still held by another member, which has to leave first.";
        UNSUPPORTED_ASSIGNOR = 112 => "UNSUPPORTED_ASSIGNOR", retriable: false, "The group does not support this assignor or its version range.";
        STALE_MEMBER_EPOCH = 113 => "STALE_MEMBER_EPOCH", retriable: false, "The member epoch is stale; retry once the heartbeat returns the current one.";
        MISMATCHED_ENDPOINT_TYPE = 114 => "MISMATCHED_ENDPOINT_TYPE", retriable: false, "The request reached an endpoint of the wrong type.";
        UNSUPPORTED_ENDPOINT_TYPE = 115 => "UNSUPPORTED_ENDPOINT_TYPE", retriable: false, "The broker does not yet support this kind of endpoint.";
        UNKNOWN_CONTROLLER_ID = 116 => "UNKNOWN_CONTROLLER_ID", retriable: false, "No controller with this id is known.";
        UNKNOWN_SUBSCRIPTION_ID = 117 => "UNKNOWN_SUBSCRIPTION_ID", retriable: false, "The telemetry subscription id is unknown or out of date.";
        TELEMETRY_TOO_LARGE = 118 => "TELEMETRY_TOO_LARGE", retriable: false, "The telemetry push exceeds the largest size the broker accepts.";
        INVALID_REGISTRATION = 119 => "INVALID_REGISTRATION", retriable: false, "The controller rejected the broker's registration as invalid.";
        TRANSACTION_ABORTABLE = 120 => "TRANSACTION_ABORTABLE", retriable: false, "The transaction hit an error; abort it to keep using the transactional id.";
        INVALID_RECORD_STATE = 121 => "INVALID_RECORD_STATE", retriable: false, "The record is not in a state that allows this acknowledgement.";
        SHARE_SESSION_NOT_FOUND = 122 => "SHARE_SESSION_NOT_FOUND", retriable: true, "The broker has no share session matching the request.";
        INVALID_SHARE_SESSION_EPOCH = 123 => "INVALID_SHARE_SESSION_EPOCH", retriable: true, "The share session epoch does not match what the broker expects.";
        FENCED_STATE_EPOCH = 124 => "FENCED_STATE_EPOCH", retriable: false, "The share-group state epoch in the request does not match the share coordinator's.";
        INVALID_VOTER_KEY = 125 => "INVALID_VOTER_KEY", retriable: false, "The voter key (replica id and directory id) does not match the replica that received it.";
        DUPLICATE_VOTER = 126 => "DUPLICATE_VOTER", retriable: false, "The voter is already in the voter set.";
        VOTER_NOT_FOUND = 127 => "VOTER_NOT_FOUND", retriable: false, "The voter is not in the voter set.";
        INVALID_REGULAR_EXPRESSION = 128 => "INVALID_REGULAR_EXPRESSION", retriable: false, "The subscription's regular expression could not be parsed.";
        REBOOTSTRAP_REQUIRED = 129 => "REBOOTSTRAP_REQUIRED", retriable: false, "The client's metadata is stale; it should bootstrap again.";
        STREAMS_INVALID_TOPOLOGY = 130 => "STREAMS_INVALID_TOPOLOGY", retriable: false, "The streams topology in the request is invalid.";
        STREAMS_INVALID_TOPOLOGY_EPOCH = 131 => "STREAMS_INVALID_TOPOLOGY_EPOCH", retriable: false, "The streams topology epoch in the request is invalid.";
        STREAMS_TOPOLOGY_FENCED = 132 => "STREAMS_TOPOLOGY_FENCED", retriable: false, "The streams topology epoch in the request is out of date.";
        SHARE_SESSION_LIMIT_REACHED = 133 => "SHARE_SESSION_LIMIT_REACHED", retriable: true, "The broker has reached its limit of share sessions.";
    }
}

impl ErrorCode {
    /// `true` for [`ErrorCode::NONE`], the code of a successful operation.
    pub const fn is_ok(self) -> bool {
        self.0 == Self::NONE.0
    }

    /// `true` for every code except [`ErrorCode::NONE`], known or not.
    pub const fn is_err(self) -> bool {
        !self.is_ok()
    }

    /// `Ok(())` for [`ErrorCode::NONE`], otherwise `Err(self)`, so a response's code can be
    /// checked with `?`.
    pub fn into_result(self) -> Result<(), ErrorCode> {
        if self.is_ok() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl std::error::Error for ErrorCode {}

#[cfg(test)]
mod tests {
    use super::{ErrorCode, CONST_IDENTS};
    use std::collections::HashSet;

    #[test]
    fn known_values_and_names() {
        let cases = [
            (ErrorCode::UNKNOWN_SERVER_ERROR, -1, "UNKNOWN_SERVER_ERROR"),
            (ErrorCode::NONE, 0, "NONE"),
            (ErrorCode::OFFSET_OUT_OF_RANGE, 1, "OFFSET_OUT_OF_RANGE"),
            (ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, 3, "UNKNOWN_TOPIC_OR_PARTITION"),
            (ErrorCode::NOT_LEADER_OR_FOLLOWER, 6, "NOT_LEADER_OR_FOLLOWER"),
            (ErrorCode::REQUEST_TIMED_OUT, 7, "REQUEST_TIMED_OUT"),
            (ErrorCode::COORDINATOR_LOAD_IN_PROGRESS, 14, "COORDINATOR_LOAD_IN_PROGRESS"),
            (ErrorCode::INVALID_TOPIC_EXCEPTION, 17, "INVALID_TOPIC_EXCEPTION"),
            (ErrorCode::TOPIC_AUTHORIZATION_FAILED, 29, "TOPIC_AUTHORIZATION_FAILED"),
            (ErrorCode::UNSUPPORTED_VERSION, 35, "UNSUPPORTED_VERSION"),
            (ErrorCode::PRODUCER_FENCED, 90, "PRODUCER_FENCED"),
            (ErrorCode::UNKNOWN_TOPIC_ID, 100, "UNKNOWN_TOPIC_ID"),
            (ErrorCode::REBOOTSTRAP_REQUIRED, 129, "REBOOTSTRAP_REQUIRED"),
            (ErrorCode::SHARE_SESSION_LIMIT_REACHED, 133, "SHARE_SESSION_LIMIT_REACHED"),
        ];
        for (code, value, name) in cases {
            assert_eq!(code.0, value);
            assert_eq!(code, ErrorCode(value));
            assert_eq!(code.name(), Some(name));
            assert_eq!(format!("{code:?}"), name);
            assert_eq!(code.to_string(), name);
            assert!(code.description().is_some());
        }
    }

    #[test]
    fn unknown_values_round_trip() {
        for value in [-2i16, 134, 1234, i16::MAX, i16::MIN] {
            let code = ErrorCode(value);
            assert_eq!(code.0, value);
            assert_eq!(code.name(), None);
            assert_eq!(code.description(), None);
            assert!(!code.is_retriable());
            assert!(!code.is_ok());
            assert!(!ErrorCode::KNOWN.contains(&code));
            assert_eq!(code.into_result(), Err(code));
            assert_eq!(format!("{code:?}"), format!("ErrorCode({value})"));
        }
        assert_eq!(format!("{:?}", ErrorCode(1234)), "ErrorCode(1234)");
    }

    #[test]
    fn retriability() {
        let retriable = [
            ErrorCode::NOT_LEADER_OR_FOLLOWER,
            ErrorCode::REQUEST_TIMED_OUT,
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            ErrorCode::COORDINATOR_NOT_AVAILABLE,
            ErrorCode::COORDINATOR_LOAD_IN_PROGRESS,
            ErrorCode::NOT_COORDINATOR,
            ErrorCode::LEADER_NOT_AVAILABLE,
            ErrorCode::NETWORK_EXCEPTION,
            ErrorCode::NOT_ENOUGH_REPLICAS,
            ErrorCode::NOT_CONTROLLER,
            ErrorCode::CONCURRENT_TRANSACTIONS,
            ErrorCode::KAFKA_STORAGE_ERROR,
            ErrorCode::FENCED_LEADER_EPOCH,
            ErrorCode::UNKNOWN_TOPIC_ID,
            ErrorCode::THROTTLING_QUOTA_EXCEEDED,
        ];
        for code in retriable {
            assert!(code.is_retriable(), "{code:?} should be retriable");
        }
        let fatal = [
            ErrorCode::NONE,
            ErrorCode::UNKNOWN_SERVER_ERROR,
            ErrorCode::OFFSET_OUT_OF_RANGE,
            ErrorCode::TOPIC_AUTHORIZATION_FAILED,
            ErrorCode::PRODUCER_FENCED,
            ErrorCode::INVALID_PRODUCER_EPOCH,
            ErrorCode::MESSAGE_TOO_LARGE,
            ErrorCode::UNSUPPORTED_VERSION,
            ErrorCode::REBALANCE_IN_PROGRESS,
            ErrorCode::TRANSACTION_ABORTABLE,
        ];
        for code in fatal {
            assert!(!code.is_retriable(), "{code:?} should not be retriable");
        }
        let count = ErrorCode::KNOWN.iter().filter(|c| c.is_retriable()).count();
        assert_eq!(count, 32);
    }

    #[test]
    fn ok_and_result() {
        assert!(ErrorCode::NONE.is_ok());
        assert!(!ErrorCode::NONE.is_err());
        assert_eq!(ErrorCode::default(), ErrorCode::NONE);
        assert_eq!(ErrorCode::NONE.into_result(), Ok(()));
        let code = ErrorCode::NOT_COORDINATOR;
        assert!(!code.is_ok());
        assert!(code.is_err());
        assert_eq!(code.into_result(), Err(code));
        let boxed: Box<dyn std::error::Error> = Box::new(code);
        assert_eq!(boxed.to_string(), "NOT_COORDINATOR");
    }

    #[test]
    fn known_is_complete_without_duplicates() {
        let values: HashSet<i16> = ErrorCode::KNOWN.iter().map(|c| c.0).collect();
        assert_eq!(values.len(), ErrorCode::KNOWN.len(), "duplicate value in KNOWN");
        let names: HashSet<&str> = ErrorCode::KNOWN.iter().map(|c| c.name().unwrap()).collect();
        assert_eq!(names.len(), ErrorCode::KNOWN.len(), "duplicate name in KNOWN");
        // Kafka 4.1 defines -1..=133 with no gaps, listed in order.
        assert_eq!(ErrorCode::KNOWN.len(), 135);
        for (i, code) in ErrorCode::KNOWN.iter().enumerate() {
            assert_eq!(i32::from(code.0), i32::try_from(i).unwrap() - 1);
        }
    }

    #[test]
    fn names_match_constants_and_descriptions_are_one_line() {
        assert_eq!(CONST_IDENTS.len(), ErrorCode::KNOWN.len());
        for &(code, ident) in CONST_IDENTS {
            assert_eq!(code.name(), Some(ident));
            let desc = code.description().unwrap();
            assert!(!desc.is_empty() && !desc.contains('\n'), "{ident}: {desc:?}");
            assert!(desc.ends_with('.'), "{ident}: {desc:?}");
        }
    }
}
