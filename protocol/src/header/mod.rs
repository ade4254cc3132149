//! Typed request and response headers ("custom headers"), flattened into `extFields`.
//!
//! Every header is declared once with [`command_header!`], which generates the struct and its
//! `extFields` encode/decode. Field kinds:
//! * `req`: Java marks it `@CFNotNull`; always sent, and a missing one is a decode error
//!   (Java answers "the custom field <name> is null").
//! * `opt`: may be absent; `None` is not sent.
//!
//! Values are strings on the wire: integers in decimal, booleans `true`/`false`.

use thiserror::Error;

use super::ext_fields::ExtFields;

pub mod admin;
pub mod client;
pub mod ha;
pub mod namesrv;
pub mod offset;
pub mod pull;
pub mod query;
pub mod send;
pub mod transaction;

/// A header that lives in `extFields`.
pub trait CommandHeader: Sized {
    /// Java class name, for error messages.
    const NAME: &'static str;
    fn encode(&self, ext: &mut ExtFields);
    fn decode(ext: &ExtFields) -> Result<Self, HeaderError>;
}

/// A header field is missing or unparsable.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("the custom field <{field}> is null")]
    Missing {
        header: &'static str,
        field: &'static str,
    },
    #[error("the custom field <{field}> has an illegal value {value:?}")]
    Invalid {
        header: &'static str,
        field: &'static str,
        value: String,
    },
}

/// A value that travels as an `extFields` string.
pub trait ExtValue: Sized {
    fn to_ext(&self) -> String;
    fn from_ext(text: &str) -> Option<Self>;
}

impl ExtValue for String {
    fn to_ext(&self) -> String {
        self.clone()
    }
    fn from_ext(text: &str) -> Option<Self> {
        Some(text.to_owned())
    }
}

macro_rules! ext_int {
    ($($ty:ty),*) => {$(
        impl ExtValue for $ty {
            fn to_ext(&self) -> String {
                self.to_string()
            }
            fn from_ext(text: &str) -> Option<Self> {
                text.trim().parse().ok()
            }
        }
    )*};
}
ext_int!(i32, i64);

impl ExtValue for bool {
    fn to_ext(&self) -> String {
        self.to_string()
    }
    /// Java's `Boolean.parseBoolean` (only a case-insensitive "true" is true), plus "1": the C++
    /// 2.x client writes booleans through a stringstream, which gives "1"/"0".
    fn from_ext(text: &str) -> Option<Self> {
        Some(text.eq_ignore_ascii_case("true") || text == "1")
    }
}

#[doc(hidden)]
pub fn decode_required<T: ExtValue>(
    ext: &ExtFields,
    header: &'static str,
    field: &'static str,
) -> Result<T, HeaderError> {
    match ext.get(field) {
        None => Err(HeaderError::Missing { header, field }),
        Some(text) => T::from_ext(text).ok_or_else(|| HeaderError::Invalid {
            header,
            field,
            value: text.to_owned(),
        }),
    }
}

#[doc(hidden)]
pub fn decode_optional<T: ExtValue>(
    ext: &ExtFields,
    header: &'static str,
    field: &'static str,
) -> Result<Option<T>, HeaderError> {
    match ext.get(field) {
        None => Ok(None),
        Some(text) => T::from_ext(text)
            .map(Some)
            .ok_or_else(|| HeaderError::Invalid {
                header,
                field,
                value: text.to_owned(),
            }),
    }
}

/// Test support: deterministic sample values for round-trip tests of every header.
#[cfg(test)]
pub(crate) trait SampleValue {
    fn sample(seed: u64) -> Self;
}

#[cfg(test)]
impl SampleValue for String {
    fn sample(seed: u64) -> Self {
        // Include the characters that need escaping in JSON and the property separators.
        ["", "TopicTest", "a\u{1}b\u{2}", "q\"\\/é", "%RETRY%g"][(seed % 5) as usize].to_owned()
    }
}

#[cfg(test)]
impl SampleValue for i32 {
    fn sample(seed: u64) -> Self {
        [0, -1, 7, i32::MAX, i32::MIN][(seed % 5) as usize]
    }
}

#[cfg(test)]
impl SampleValue for i64 {
    fn sample(seed: u64) -> Self {
        [0, -1, 1_700_000_000_000, i64::MAX, i64::MIN][(seed % 5) as usize]
    }
}

#[cfg(test)]
impl SampleValue for bool {
    fn sample(seed: u64) -> Self {
        seed % 2 == 1
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __header_field_type {
    (req $ty:ty) => { $ty };
    (opt $ty:ty) => { Option<$ty> };
}

/// Declares a typed header. See the module docs for the field kinds.
#[macro_export]
macro_rules! command_header {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* $kind:ident $field:ident : $ty:ty = $key:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Default)]
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $crate::__header_field_type!($kind $ty), )*
        }

        impl $crate::header::CommandHeader for $name {
            const NAME: &'static str = stringify!($name);

            #[allow(unused_variables)]
            fn encode(&self, ext: &mut $crate::ext_fields::ExtFields) {
                $( $crate::command_header!(@encode $kind ext, $key, &self.$field); )*
            }

            #[allow(unused_variables)]
            fn decode(
                ext: &$crate::ext_fields::ExtFields,
            ) -> Result<Self, $crate::header::HeaderError> {
                Ok($name {
                    $( $field: $crate::command_header!(@decode $kind ext, stringify!($name), $key, $ty), )*
                })
            }
        }

        #[cfg(test)]
        impl $name {
            /// A deterministic sample: field values and presence vary with `seed`.
            #[allow(dead_code, unused_variables, unused_mut, unused_assignments, unused_imports)]
            pub(crate) fn sample(seed: u64) -> Self {
                use $crate::header::SampleValue;
                let mut bit = 0u32;
                $name {
                    $( $field: {
                        bit += 1;
                        let field_seed = seed.wrapping_mul(31).wrapping_add(u64::from(bit));
                        $crate::command_header!(@sample $kind $ty, field_seed, (seed >> (bit % 64)) & 1 == 1)
                    }, )*
                }
            }
        }
    };

    (@encode req $ext:ident, $key:literal, $value:expr) => {
        $ext.insert($key, $crate::header::ExtValue::to_ext($value));
    };
    (@encode opt $ext:ident, $key:literal, $value:expr) => {
        if let Some(value) = $value {
            $ext.insert($key, $crate::header::ExtValue::to_ext(value));
        }
    };
    (@decode req $ext:ident, $header:expr, $key:literal, $ty:ty) => {
        $crate::header::decode_required::<$ty>($ext, $header, $key)?
    };
    (@decode opt $ext:ident, $header:expr, $key:literal, $ty:ty) => {
        $crate::header::decode_optional::<$ty>($ext, $header, $key)?
    };
    (@sample req $ty:ty, $seed:expr, $present:expr) => {
        <$ty as SampleValue>::sample($seed)
    };
    (@sample opt $ty:ty, $seed:expr, $present:expr) => {
        if $present { Some(<$ty as SampleValue>::sample($seed)) } else { None }
    };
}

command_header! {
    /// No typed header (e.g. HEART_BEAT in 4.x, GET_BROKER_RUNTIME_INFO).
    pub struct EmptyHeader {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::round_trip_tests;

    command_header! {
        pub struct Probe {
            req name: String = "name",
            req count: i32 = "count",
            opt flag: bool = "flag",
        }
    }

    #[test]
    fn missing_and_invalid_fields_are_named() {
        let ext: ExtFields = [("count", "x")].into_iter().collect();
        assert_eq!(
            Probe::decode(&ext).unwrap_err(),
            HeaderError::Missing {
                header: "Probe",
                field: "name"
            }
        );
        let ext: ExtFields = [("name", "n"), ("count", "x")].into_iter().collect();
        let err = Probe::decode(&ext).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the custom field <count> has an illegal value \"x\""
        );
        let ext: ExtFields = [("name", "n"), ("count", " 3"), ("flag", "TRUE")]
            .into_iter()
            .collect();
        assert_eq!(
            Probe::decode(&ext).unwrap(),
            Probe {
                name: "n".into(),
                count: 3,
                flag: Some(true)
            }
        );
    }

    #[test]
    fn booleans_parse_like_java_plus_cpp_digits() {
        assert_eq!(bool::from_ext("True"), Some(true));
        assert_eq!(bool::from_ext("1"), Some(true));
        assert_eq!(bool::from_ext("0"), Some(false));
        assert_eq!(bool::from_ext("yes"), Some(false));
    }

    round_trip_tests!(Probe, EmptyHeader);
}
