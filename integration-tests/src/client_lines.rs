//! The lines the other client families' test programs print (franz-go in
//! `go/franz`, kafkajs in `js/kafkajs`): one JSON object per record
//! acknowledged or consumed.

use serde_json::Value;

/// One record as a client of another family (Go, JavaScript) reported it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClientRecord {
    pub partition: i32,
    pub offset: i64,
    pub value: String,
}

/// The `{"event": "acked"|"consumed", "partition", "offset", "value"}`
/// lines a client printed: (acknowledged, consumed).
pub fn parse_events(stdout: &[u8]) -> (Vec<ClientRecord>, Vec<ClientRecord>) {
    let (mut acked, mut consumed) = (Vec::new(), Vec::new());
    for l in String::from_utf8_lossy(stdout).lines() {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        let r = ClientRecord {
            partition: v["partition"].as_i64().unwrap_or(-1) as i32,
            offset: v["offset"].as_i64().unwrap_or(-1),
            value: v["value"].as_str().unwrap_or_default().to_owned(),
        };
        match v["event"].as_str() {
            Some("acked") => acked.push(r),
            Some("consumed") => consumed.push(r),
            _ => {}
        }
    }
    (acked, consumed)
}
