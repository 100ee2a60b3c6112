//! Unit tests of `watch`: URLs per mode, device ids from host names, close codes.

use super::*;

fn plan(device: Option<&str>, live_only: bool, since: Option<u64>) -> Plan {
    WatchArgs {
        url: DEFAULT_URL.into(),
        user: "demo-farmer".into(),
        token: None,
        device: device.map(|d| DeviceId::parse(d).expect("valid")),
        live_only,
        since,
    }
    .plan()
    .expect("valid arguments")
}

#[test]
fn resumes_with_a_device_by_default_and_after_the_last_printed_event() {
    let p = plan(None, false, None);
    let url = p.url(None);
    assert!(
        url.starts_with("ws://127.0.0.1:8080/ws?deviceId=cli-"),
        "{url}"
    );
    assert!(!url.contains("since"), "{url}");
    assert!(
        p.url(Some(17)).ends_with("&since=17"),
        "{}",
        p.url(Some(17))
    );
    let p = plan(Some("laptop"), false, Some(5));
    assert_eq!(
        p.url(None),
        "ws://127.0.0.1:8080/ws?deviceId=laptop&since=5"
    );
    assert_eq!(
        p.url(Some(9)),
        "ws://127.0.0.1:8080/ws?deviceId=laptop&since=9"
    );
}

#[test]
fn live_only_sends_no_device() {
    let p = plan(None, true, None);
    assert_eq!(p.url(None), DEFAULT_URL);
    assert_eq!(p.url(Some(3)), format!("{DEFAULT_URL}?since=3"));
}

#[test]
fn host_names_become_valid_device_ids() {
    assert_eq!(
        device_from_host("farm.example.com\n").as_str(),
        "cli-farm-example-com"
    );
    assert_eq!(device_from_host("").as_str(), "cli-host");
    let long = device_from_host(&"é".repeat(100));
    assert_eq!(long.as_str().len(), 64);
}

#[test]
fn client_faults_end_the_watch_and_restarts_do_not() {
    let frame = |code: u16| {
        Some(tungstenite::protocol::CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        })
    };
    assert!(matches!(closed(frame(1012)), Ok(Ended::Lost(_))));
    assert!(matches!(closed(frame(1013)), Ok(Ended::Lost(_))));
    assert!(matches!(closed(None), Ok(Ended::Lost(_))));
    assert!(closed(frame(1008)).is_err());
}
