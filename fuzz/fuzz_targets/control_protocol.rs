//! The control socket's requests (`egress-monitor baseline ...`): one JSON line, of at most
//! 4096 bytes (`MAX_REQUEST` in `persist::control`), read and parsed as the agent does, then
//! carried out on an empty policy with two known devices. Never a panic; a request that parses
//! serialises back to itself; what is answered is bounded; an accepted destination is a rule
//! whose text reads back to the same rule.
#![no_main]

use std::collections::BTreeMap;
use std::io::{BufRead as _, Read as _};

use libfuzzer_sys::fuzz_target;
use monitor::config::PolicyConfig;
use monitor::persist::baseline;
use monitor::persist::protocol::{self, Request, Response};
use monitor::policy::{Policy, Rule};
use monitor::types::MacAddr;
use monitor_fuzz::assert_message;

/// `persist::control::MAX_REQUEST`.
const MAX_REQUEST: u64 = 4096;

fuzz_target!(|data: &[u8]| {
    // What `control::answer` does with the stream: one line, at most MAX_REQUEST bytes, UTF-8.
    let mut line = String::new();
    if std::io::BufReader::new(data.take(MAX_REQUEST))
        .read_line(&mut line)
        .is_err()
    {
        return;
    }
    let request = match protocol::parse_request(&line) {
        Ok(request) => request,
        Err(e) => {
            // What the agent answers: why, not the line again.
            assert_message(&e, 512);
            return;
        }
    };
    let json = serde_json::to_string(&request).expect("a request serialises");
    assert!(!json.contains('\n'), "a request is one line: {json:?}");
    assert_eq!(
        serde_json::from_str::<Request>(&json).ok(),
        Some(request.clone())
    );

    let phone: MacAddr = "02:00:00:00:00:01".parse().unwrap();
    let tv: MacAddr = "02:00:00:00:00:02".parse().unwrap();
    let candidates = vec![
        (phone, Some("phone".to_owned())),
        (tv, Some("tv".to_owned())),
    ];
    let mut policy = Policy::new(PolicyConfig::default(), BTreeMap::new());
    let group = |_| None;
    let result = baseline::execute(&mut policy, &request, candidates.clone(), &group);
    let text = match &result {
        Ok((text, _)) | Err(text) => text.clone(),
    };
    // The answer may quote the device and the destination asked for, and list a baseline.
    assert_message(&text, 4096 + 8 * line.len());
    let response = Response {
        ok: result.is_ok(),
        text,
    };
    let out = serde_json::to_string(&response).expect("a response serialises");
    assert!(!out.contains('\n'), "a response is one line");

    if let (Request::Accept { destination, .. }, Ok((_, changed))) = (&request, &result) {
        assert!(
            *changed,
            "the first accept into an empty baseline changes it"
        );
        let rule: Rule = destination.parse().expect("an accepted destination parses");
        let shown = rule.to_string();
        assert_eq!(shown.parse::<Rule>().as_ref(), Ok(&rule), "{shown:?}");
        // Accepting it again changes nothing.
        let again = baseline::execute(&mut policy, &request, candidates, &group);
        assert!(matches!(again, Ok((_, false))), "{again:?}");
    }
});
