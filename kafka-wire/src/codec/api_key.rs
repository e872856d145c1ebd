use super::open_enum;

open_enum! {
    /// The API key at the front of every request header.
    pub struct ApiKey(i16) {
        PRODUCE = 0 => "Produce",
        API_VERSIONS = 18 => "ApiVersions",
    }
}
