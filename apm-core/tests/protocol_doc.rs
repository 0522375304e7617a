//! Keeps the example hex dumps in PROTOCOL.md equal to what the code
//! encodes. Run with `APM_BLESS=1` to rewrite them after a deliberate change.

use std::fmt::Write;

use apm_core::{HEADER_LEN, LENGTH_LEN};

const BEGIN: &str = "<!-- BEGIN GENERATED EXAMPLES: cargo test -p apm-core --test protocol_doc -->";
const END: &str = "<!-- END GENERATED EXAMPLES -->";

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn render() -> String {
    let mut out = String::new();
    for frame in apm_core::samples::all() {
        let wire = frame.to_bytes().unwrap();
        let t = frame.message.message_type();
        writeln!(out, "#### {:?} (0x{:02x})\n", t, t as u8).unwrap();
        writeln!(out, "```text\n{:#?}\n```\n", frame.message).unwrap();
        writeln!(out, "```text").unwrap();
        writeln!(out, "length  {}", hex(&wire[..LENGTH_LEN])).unwrap();
        writeln!(
            out,
            "header  {}",
            hex(&wire[LENGTH_LEN..LENGTH_LEN + HEADER_LEN])
        )
        .unwrap();
        let body = &wire[LENGTH_LEN + HEADER_LEN..];
        if body.is_empty() {
            writeln!(out, "body    (empty)").unwrap();
        }
        for (i, chunk) in body.chunks(16).enumerate() {
            let label = if i == 0 { "body   " } else { "       " };
            writeln!(out, "{label} {}", hex(chunk)).unwrap();
        }
        writeln!(out, "```\n").unwrap();
    }
    out
}

#[test]
fn protocol_md_examples_are_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let start = doc.find(BEGIN).expect("begin marker") + BEGIN.len();
    let end = doc.find(END).expect("end marker");
    let generated = format!("\n\n{}", render());
    if std::env::var_os("APM_BLESS").is_some() {
        let new = format!("{}{}{}", &doc[..start], generated, &doc[end..]);
        std::fs::write(path, new).unwrap();
        return;
    }
    assert!(
        doc[start..end] == generated,
        "PROTOCOL.md examples are stale: run APM_BLESS=1 cargo test -p apm-core --test protocol_doc"
    );
}
