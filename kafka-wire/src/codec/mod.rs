//! The codec layer: Kafka's wire format as Rust types, with no IO.
//!
//! Decoders read from [`bytes::Bytes`] and hand out slices of it instead of copies; encoders
//! write into a [`bytes::BytesMut`] in one pass, patching length prefixes once the lengths are
//! known. Bytes from the network never cause a panic: every failure is a [`DecodeError`]. A value
//! that cannot be written as asked (a length its prefix cannot express, a field the version does
//! not carry) is an [`EncodeError`], never a silent truncation.

mod api_key;
#[cfg(feature = "arbitrary")]
pub mod arb;
pub mod compression;
mod error;
mod error_code;
pub mod frame;
pub mod header;
pub mod messages;
pub mod primitives;
pub mod record_batch;
mod types;

pub use api_key::ApiKey;
pub use error::{DecodeError, DecodeResult, EncodeError, EncodeResult};
pub use error_code::ErrorCode;
pub use types::{RawTaggedField, UnknownTaggedFields, Uuid};

/// Declares an open wire enumeration: a newtype over the wire integer with one associated
/// constant per known value. Unknown values are kept as they are, so they round-trip; `Debug`
/// prints the name when the value is known and the number otherwise.
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident($repr:ty) {
            $( $(#[$cmeta:meta])* $konst:ident = $value:literal => $display:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
        $vis struct $name(pub $repr);

        impl $name {
            $(
                $(#[$cmeta])*
                #[doc = ""]
                #[doc = concat!("Wire value `", stringify!($value), "`, named `", $display, "`.")]
                pub const $konst: Self = Self($value);
            )*

            /// Every value this codebase has a name for.
            pub const KNOWN: &'static [Self] = &[$(Self::$konst),*];

            /// Kafka's name for this value, or `None` if it is not one this codebase knows.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some($display), )*
                    _ => None,
                }
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(self, f)
            }
        }
    };
}
pub(crate) use open_enum;
