//! User and device ids: every accepted id is one NATS subject token.

use proptest::prelude::*;
use ziraai_proto::ids::{InvalidId, MAX_ID_LEN};
use ziraai_proto::{DeviceId, UserId};

use crate::strategy::any_text;

/// The documented rule, `^[A-Za-z0-9_-]{1,64}$`, written independently of the code.
fn documented_rule(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn near_miss() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{0,70}",
        "[A-Za-z0-9_-]{0,30}[.*> \\t\\r\\n\\x00/é][A-Za-z0-9_-]{0,30}",
        any_text(),
    ]
}

proptest! {
    #[test]
    fn user_ids_follow_the_documented_rule(s in near_miss()) {
        let parsed = UserId::parse(&s);
        prop_assert_eq!(parsed.is_ok(), documented_rule(&s), "{:?}", s);
        prop_assert_eq!(DeviceId::parse(&s).is_ok(), documented_rule(&s));
        if let Ok(id) = parsed {
            prop_assert_eq!(id.as_str(), s.as_str());
            prop_assert!(!id.as_str().contains(['.', '*', '>']));
            prop_assert!(!id.as_str().chars().any(char::is_whitespace));
            prop_assert!(id.as_str().len() <= MAX_ID_LEN);
            // One token: the subject has exactly two dot-separated parts.
            let live = id.live_subject();
            prop_assert_eq!(live.split('.').collect::<Vec<_>>(), vec!["live", id.as_str()]);
            let notify = id.notify_subject();
            prop_assert_eq!(notify.split('.').collect::<Vec<_>>(), vec!["notify", id.as_str()]);
        }
    }

    #[test]
    fn refusals_name_the_reason(s in near_miss()) {
        match UserId::parse(&s) {
            Ok(_) => {}
            Err(InvalidId::Empty) => prop_assert!(s.is_empty()),
            Err(InvalidId::TooLong) => prop_assert!(s.len() > MAX_ID_LEN),
            Err(InvalidId::BadChar(c)) => {
                prop_assert!(s.contains(c));
                prop_assert!(!(c.is_ascii_alphanumeric() || c == '_' || c == '-'));
            }
        }
    }

    #[test]
    fn decoded_user_ids_are_one_token(s in near_miss()) {
        let text = serde_json::to_string(&s).expect("encode");
        let decoded = serde_json::from_str::<UserId>(&text);
        prop_assert_eq!(decoded.is_ok(), documented_rule(&s));
        let packed = rmp_serde::to_vec(&s).expect("encode");
        let decoded = rmp_serde::from_slice::<UserId>(&packed);
        prop_assert_eq!(decoded.is_ok(), documented_rule(&s));
        if let Ok(id) = decoded {
            prop_assert_eq!(serde_json::to_string(&id).expect("encode"), text);
        }
    }
}
