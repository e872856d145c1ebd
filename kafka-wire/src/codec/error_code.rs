use super::open_enum;

open_enum! {
    /// The error code of a response or of one of its parts.
    pub struct ErrorCode(i16) {
        NONE = 0 => "NONE",
    }
}
