//! Test helpers shared by the typed headers' round-trip tests, kept out of `header/` so that it
//! need not import `command.rs` and `frame.rs`, which import it.

use crate::command::{RemotingCommand, SerializeType};
use crate::ext_fields::ExtFields;
use crate::frame;
use crate::header::CommandHeader;

/// Round-trips `sample(seed)` of each listed header type through `extFields` and through both
/// wire serializations of a whole frame.
macro_rules! round_trip_tests {
    ($($header:ty),* $(,)?) => {
        #[test]
        fn every_header_round_trips() {
            use $crate::header::CommandHeader;
            $(
                for seed in 0..64u64 {
                    let header = <$header>::sample(seed);
                    let mut ext = $crate::ext_fields::ExtFields::new();
                    header.encode(&mut ext);
                    assert_eq!(<$header>::decode(&ext).unwrap(), header, "{} seed {seed}", <$header>::NAME);
                    $crate::test_support::assert_frame_round_trip(&header);
                }
            )*
        }
    };
}
pub(crate) use round_trip_tests;

pub(crate) fn assert_frame_round_trip<H: CommandHeader + PartialEq + std::fmt::Debug>(header: &H) {
    for serialize_type in [SerializeType::Json, SerializeType::RocketMq] {
        let mut command = RemotingCommand::request(1, header);
        command.serialize_type = serialize_type;
        let mut wire = bytes::BytesMut::new();
        frame::encode(&command, &mut wire).unwrap();
        let decoded = frame::decode_frame(&mut wire, frame::FRAME_MAX_BYTES_DEFAULT)
            .unwrap()
            .unwrap()
            .into_command()
            .unwrap();
        if serialize_type == SerializeType::Json {
            let back: H = decoded.decode_header().unwrap();
            assert_eq!(&back, header, "{} via JSON", H::NAME);
        } else {
            // The binary layout (like Java) turns empty strings into absent values; compare
            // the re-encoded maps with empty values dropped.
            let mut expected = ExtFields::new();
            header.encode(&mut expected);
            let expected: ExtFields = expected.iter().filter(|(_, v)| !v.is_empty()).collect();
            assert_eq!(decoded.ext_fields, expected, "{} via binary", H::NAME);
        }
    }
}
